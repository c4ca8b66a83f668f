"""The highest open-loop rate at which p99 latency stays under a bound, for the framed
echo server and for s13eir (1 worker, phones on no list), measured in one run.

The ratio of the two is the latency-bounded counterpart of the throughput ratio that
bench/run.py prints: how much of what this machine's sockets, event loop and load
generator allow at that latency s13eir keeps. Each server is searched by bisection on
the rate (``--steps`` runs of ``--duration`` seconds each); the machine is noisy, so
a step near the boundary can go either way: run it twice if the two disagree.

    .venv/bin/python bench/latency_rate.py [--p99-us 1000] [--steps 6] [--duration 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import echo_server, free_port, load, p, s13eir, write_config


def search(tmp: Path, port: int, args: argparse.Namespace, extra: list[str], hi: float) -> tuple[float, list[Any]]:
    """Bisect the rate in [hi / 64, hi]; returns the highest rate that met the bound."""
    lo, best, trail = hi / 64, 0.0, []
    for _ in range(args.steps):
        rate = (lo * hi) ** 0.5  # geometric: the interesting range spans decades
        r = load(tmp, port, args, "--rate", str(int(rate)), "--mix", "unknown=1.0", *extra)
        ok = p(r, "p99") <= args.p99_us and not r["timeouts"] and not r["errors"]
        trail.append((int(rate), p(r, "p99"), ok))
        if ok:
            lo, best = rate, rate
        else:
            hi = rate
    return best, trail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p99-us", type=float, default=1000.0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--mmes", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    closed = ["--concurrency", str(args.concurrency), "--mix", "unknown=1.0"]
    results: dict[str, tuple[float, list[Any]]] = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        with echo_server() as port:
            top = float(load(tmp, port, args, *closed)["answers_per_s"])
            results["echo server"] = search(tmp, port, args, [], top)
        port, http = free_port(), free_port()
        config = write_config(tmp, port, http)
        server = s13eir(config, http)
        try:
            top = float(load(tmp, port, args, *closed, "--config", str(config))["answers_per_s"])
            results["s13eir 1 worker"] = search(tmp, port, args, ["--config", str(config)], top)
        finally:
            server.stop()
    for name, (rate, trail) in results.items():
        steps = ", ".join(f"{r}/s: {p99:.0f} µs{'' if ok else ' (over)'}" for r, p99, ok in trail)
        print(f"{name:16} highest rate with p99 <= {args.p99_us:.0f} µs: {rate:8.0f}/s   [{steps}]")
    echo_rate = results["echo server"][0] or 1.0
    print(f"ratio s13eir / echo server: {results['s13eir 1 worker'][0] / echo_rate:.2f}", file=sys.stdout)


if __name__ == "__main__":
    main()
