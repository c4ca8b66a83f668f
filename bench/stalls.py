"""How often this machine stalls a CPU-bound process, with the other core idle and busy.

A loop pinned to CPU 0 reads the clock as fast as it can and counts the gaps longer
than 1 ms: time in which it did not run. On a dedicated machine there are none; on a
shared virtual machine the host takes the core away now and then, more often when
both of the guest's cores are busy, which is what the open-loop benchmark does (the
load generator polls on CPU 1 while the server works on CPU 0). Every answer queued
during such a gap waits for it, so this is the floor under the tail latencies that
bench/run.py measures.

    .venv/bin/python bench/stalls.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from harness import PY, pin

_PROBE = """
import json, sys, time
end = time.perf_counter() + float(sys.argv[1])
last = time.perf_counter()
gaps = []
while last < end:
    now = time.perf_counter()
    if now - last > 1e-3:
        gaps.append(now - last)
    last = now
print(json.dumps({"gaps": len(gaps), "over_5ms": sum(g > 5e-3 for g in gaps),
                  "lost_ms": 1e3 * sum(gaps), "max_ms": 1e3 * max(gaps, default=0.0)}))
"""

_SPIN = "import time, sys\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


def stalls(seconds: float, other_core_busy: bool) -> dict[str, Any]:
    """Gaps of more than 1 ms seen by a CPU-bound loop on CPU 0 in ``seconds``."""
    spinner = None
    if other_core_busy:
        spinner = subprocess.Popen([*pin(1), PY, "-c", _SPIN, str(seconds + 1)])
    try:
        out = subprocess.run([*pin(0), PY, "-c", _PROBE, str(seconds)], check=True, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def describe(name: str, r: dict[str, Any], seconds: float) -> str:
    return (f"{name}: {r['gaps']} gaps > 1 ms ({r['over_5ms']} > 5 ms) in {seconds:g} s, "
            f"{r['lost_ms']:.1f} ms lost, longest {r['max_ms']:.1f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    for busy in (False, True):
        name = "CPU 1 busy" if busy else "CPU 1 idle"
        print(describe(f"CPU-bound loop on CPU 0, {name}", stalls(args.seconds, busy), args.seconds))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
