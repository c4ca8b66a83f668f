"""What the operating modes cost the answers: the ECR rate of a node with ``modes:`` set
against the same node without (today's Bloom-negative path: phones on no list), in
interleaved rounds of one run (``s13eir load``, closed loop, phones on no list). The
node on CPU 0, the load generator on CPU 1, as in bench/run.py.

* ``permissive+pairing``: pairing on: a device with no pair (the deck's, here: pairs
  are not imported yet) must keep the Bloom-negative shape;
* ``restrictive``: every device on no list is judged under the grace state machine
  (the first check of each opens its record, in the node's memory).

    .venv/bin/python bench/modes_overhead.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness import free_port, load, s13eir, write_config

MODES: dict[str, dict[str, Any]] = {
    "permissive+pairing": {"pairing": {"enabled": True}},
    "restrictive": {"mode": "restrictive"},
}


def configure(tmp: Path, modes: dict[str, Any] | None) -> tuple[Path, int]:
    port, http = free_port(), free_port()
    path = write_config(tmp, port, http)
    cfg = yaml.safe_load(path.read_text())
    if modes is not None:
        cfg["modes"] = modes
    path.write_text(yaml.safe_dump(cfg))
    return path, http


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mmes", type=int, default=4)
    args = ap.parse_args()
    ratios: dict[str, list[float]] = {name: [] for name in MODES}
    base: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            got: dict[str | None, float] = {}
            for name in (None, *MODES):
                config, http = configure(Path(tmp), MODES[name] if name else None)
                port = yaml.safe_load(config.read_text())["listen"][0]["port"]
                node = s13eir(config, http)
                try:
                    result = load(Path(tmp), port, args, "--concurrency", "64", "--mix", "unknown=1")
                finally:
                    node.stop()
                got[name] = float(result["answers_per_s"])
            base.append(got[None])
            line = [f"round {r + 1}: permissive {got[None]:,.0f}/s"]
            for name in MODES:
                ratios[name].append(got[name] / got[None])
                line.append(f"{name} {got[name]:,.0f}/s ({ratios[name][-1]:.2f})")
            print(", ".join(line))
    print(f"permissive (no modes) median {statistics.median(base):,.0f} ECR/s")
    for name, rs in ratios.items():
        print(f"{name} / permissive: {statistics.median(rs):.2f} (range {min(rs):.2f}-{max(rs):.2f}, {len(rs)} rounds)")


if __name__ == "__main__":
    main()
