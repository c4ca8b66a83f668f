"""A node driven at twice its capacity, then back to half of it: answers, 3004s, DOIC
abatement, timeouts, and how long the node takes to recover.

Starts ``s13eir serve`` (the sample lists, pinned to CPU 0) and drives it with
``s13eir load`` (pinned to CPU 1). First the capacity: a closed-loop run, its
answers/s. Then, for each case, an open-loop run at ``--factor`` times that rate for
``--duration`` seconds, followed at once by a run at half the capacity during which
the node's ``s13eir_overload_reduction_percent`` is polled until it is back to 0:

- ``no admission control``: a node with ``diameter.overload.enabled: false`` (the
  baseline: everything queues);
- ``3004``: admission control, MMEs without DOIC: the node refuses a share with 3004;
- ``DOIC``: admission control, MMEs with ``--doic``: the MMEs shed what the node's
  overload reports ask.

Ratios are to the capacity measured in the same run. Bounded: every load run has a
duration and a timeout (``--timeout``, the MMEs' answer timeout, default 2 s).

    .venv/bin/python bench/overload.py [--factor 2] [--duration 10] [--mmes 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from run import PY, Server, free_port, pin, write_config


def reduction(http: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("s13eir_overload_reduction_percent "):
                return float(line.split()[1])
    return 0.0


def load_cmd(port: int, out: Path, args: argparse.Namespace, duration: float, *extra: str) -> list[str]:
    return [*pin(1), PY, "-m", "s13eir.cli", "load", "--peer", f"127.0.0.1:{port}", "--mmes", str(args.mmes),
            "--duration", str(duration), "--warmup", "0.5", "--timeout", str(args.timeout), "--no-live",
            "--json", str(out), *extra]  # fmt: skip


def run_load(port: int, tmp: Path, args: argparse.Namespace, duration: float, *extra: str) -> dict[str, Any]:
    out = tmp / f"load-{time.monotonic_ns()}.json"
    subprocess.run(load_cmd(port, out, args, duration, *extra), check=False, stdout=subprocess.DEVNULL,
                   timeout=duration * 4 + 60)  # fmt: skip
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def overloaded_then_half(port: int, http: int, tmp: Path, args: argparse.Namespace, capacity: float,
                         *extra: str) -> dict[str, Any]:  # fmt: skip
    over = run_load(port, tmp, args, args.duration, "--rate", str(capacity * args.factor), *extra)
    # At once, half the capacity: how long until the node stops shedding.
    out = tmp / f"half-{time.monotonic_ns()}.json"
    t0 = time.monotonic()
    half = subprocess.Popen(load_cmd(port, out, args, args.recovery, "--rate", str(capacity / 2), *extra),
                            stdout=subprocess.DEVNULL)  # fmt: skip
    recovered: float | None = None
    peak = 0.0
    while half.poll() is None:
        r = reduction(http)
        peak = max(peak, r)
        if r == 0 and recovered is None:
            recovered = time.monotonic() - t0
        time.sleep(0.05)
    after: dict[str, Any] = json.loads(out.read_text())
    return {"overload": over, "after": after, "recovered_s": recovered, "reduction_peak_after": peak}


def summary(name: str, res: dict[str, Any], capacity: float) -> str:
    o, a = res["overload"], res["after"]
    sent = o["requests"] + o.get("abated", 0)
    ok = o["answers"] - o.get("busy", 0)
    rec = "never" if res["recovered_s"] is None else f"{res['recovered_s']:.2f} s"
    return (f"{name:<22} offered {sent / o['elapsed_s']:>9,.0f}/s  answered {o['answers']:>9,} "
            f"(verdicts {ok:>9,} = {ok / o['elapsed_s'] / capacity:.2f}x capacity, 3004 {o.get('busy', 0):>8,}) "
            f"abated {o.get('abated', 0):>8,}  timeouts {o['timeouts']:>8,}  "
            f"p99 {o['latency_us']['p99'] / 1000:>8.1f} ms"
            f" | after: recovered in {rec}, 3004 {a.get('busy', 0):,}, timeouts {a['timeouts']:,}, "
            f"p99 {a['latency_us']['p99'] / 1000:.2f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=float, default=2.0, help="offered load, times the measured capacity")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds at --factor times capacity")
    ap.add_argument("--recovery", type=float, default=6.0, help="seconds at half the capacity afterwards")
    ap.add_argument("--mmes", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=2.0, help="the MMEs' answer timeout")
    ap.add_argument("--json", metavar="OUT", help="write every result as JSON to OUT")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="s13eir-overload-") as d:
        tmp = Path(d)
        cases = [("no admission control", False, ()), ("3004", True, ()), ("DOIC", True, ("--doic",))]
        capacity = 0.0
        for name, enabled, extra in cases:
            port, http = free_port(), free_port()
            config = write_config(tmp, port, http)
            cfg = yaml.safe_load(config.read_text())
            cfg["diameter"] = {"overload": {"enabled": enabled}}
            cfg["metrics"]["loop_lag_interval_ms"] = 100  # the admission control's sampling period
            config.write_text(yaml.safe_dump(cfg))
            node = Server([*pin(0), PY, "-m", "s13eir.cli", "serve", "--config", str(config)], port, http)
            try:
                if not capacity:
                    closed = run_load(port, tmp, args, 5.0, "--concurrency", "64")
                    capacity = closed["answers_per_s"]
                    print(f"capacity (closed loop, {args.mmes} MMEs x 64 outstanding): {capacity:,.0f} answers/s")
                    results["capacity"] = closed
                res = overloaded_then_half(port, http, tmp, args, capacity, *extra)
            finally:
                node.stop()
            results[name] = res
            print(summary(name, res, capacity), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
