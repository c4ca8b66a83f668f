"""What detection costs a node: the ECR rate with ``detection.enabled`` against the rate
without it, in interleaved rounds of one run (``s13eir load``, closed loop, phones on no
list, so that the fast path answers and records every check). The node on CPU 0, the
load generator on CPU 1, as in bench/run.py. Prints the median ratio and its range.

    .venv/bin/python bench/detection_overhead.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mmes", type=int, default=4)
    args = ap.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            got = {}
            for detection in (False, True):
                config, http = configure(Path(tmp), detection)
                port = yaml.safe_load(config.read_text())["listen"][0]["port"]
                node = s13eir(config, http)
                try:
                    result = load(Path(tmp), port, args, "--concurrency", "64", "--mix", "unknown=1")
                finally:
                    node.stop()
                got[detection] = float(result["answers_per_s"])
                rates[detection].append(got[detection])
            ratios.append(got[True] / got[False])
            print(f"round {r + 1}: off {got[False]:,.0f}/s, on {got[True]:,.0f}/s, ratio {ratios[-1]:.2f}")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    spread = f"range {min(ratios):.2f}-{max(ratios):.2f}, {args.rounds} rounds"
    print(f"ECR rate with detection on / off: {statistics.median(ratios):.2f} ({spread}); "
          f"off median {off:,.0f}/s, on {on:,.0f}/s")  # fmt: skip


if __name__ == "__main__":
    main()
