"""What detection costs a node: the ECR rate with ``detection.enabled`` against the rate
without it, in interleaved rounds of one run (``s13eir load``, closed loop, phones on no
list, so that the fast path answers and records every check). The node on CPU 0, the
load generator on CPU 1, as in bench/run.py. Prints the median ratio and its range, and
what detection did with the checks: fed to the rules, or dropped because the worker
(at its lower priority, on a host the node and the load generator saturate) fell behind.
``--rate R`` runs an open loop at R/s instead, where the answers keep the rate either way
and what matters is that detection keeps up (nothing dropped) and the latency.

    .venv/bin/python bench/detection_overhead.py [--duration 5] [--rounds 3] [--mmes 4] [--rate R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from harness import free_port, load, s13eir, write_config


def configure(tmp: Path, detection: bool) -> tuple[Path, int]:
    port, http = free_port(), free_port()
    path = write_config(tmp, port, http)
    cfg = yaml.safe_load(path.read_text())
    cfg["detection"] = {"enabled": detection}
    path.write_text(yaml.safe_dump(cfg))
    return path, http


def detection_counts(http: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("s13eir_detection_checks_total", "s13eir_detection_sightings_total",
                     's13eir_detection_dropped_total{reason="queue"}'):  # fmt: skip
            if line.startswith(name + " "):
                out[name.split("{")[0].removeprefix("s13eir_detection_").removesuffix("_total")] = float(
                    line.split()[-1]
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mmes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=None, help="open loop at this many ECR/s")
    args = ap.parse_args()
    loop = ["--rate", str(args.rate)] if args.rate else ["--concurrency", "64"]
    kept: list[float] = []
    rates: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            got, p99 = {}, {}
            for detection in (False, True):
                config, http = configure(Path(tmp), detection)
                port = yaml.safe_load(config.read_text())["listen"][0]["port"]
                node = s13eir(config, http)
                try:
                    result = load(Path(tmp), port, args, *loop, "--mix", "unknown=1")
                    if detection:
                        time.sleep(1.0)  # what the worker still holds
                        counts = detection_counts(http)
                finally:
                    node.stop()
                got[detection] = float(result["answers_per_s"])
                p99[detection] = result["latency_us"]["p99"] / 1000
                if detection:
                    checks = counts.get("checks", 0.0)
                    dropped = counts.get("dropped", 0.0)
                    kept.append(1 - dropped / (checks + dropped) if checks + dropped else 1.0)
                    print(f"  detection: {checks + dropped:,.0f} checks, {checks:,.0f} kept, {dropped:,.0f} dropped "
                          f"(queue full), {counts.get('sightings', 0):,.0f} fed to the rules")  # fmt: skip
                rates[detection].append(got[detection])
            ratios.append(got[True] / got[False])
            print(f"round {r + 1}: off {got[False]:,.0f}/s (p99 {p99[False]:.2f} ms), "
                  f"on {got[True]:,.0f}/s (p99 {p99[True]:.2f} ms), ratio {ratios[-1]:.2f}")  # fmt: skip
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    spread = f"range {min(ratios):.2f}-{max(ratios):.2f}, {args.rounds} rounds"
    print(f"ECR rate with detection on / off: {statistics.median(ratios):.2f} ({spread}); "
          f"off median {off:,.0f}/s, on {on:,.0f}/s; "
          f"checks kept for detection {statistics.median(kept):.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
