"""Memory per worker with the lists mapped from one shared file (serve --workers 2)
against a node that loads the lists itself (what every worker would cost unshared).

Generates a DIRBS blacklist of N IMEIs, starts each configuration, and reads
Rss and Pss (proportional set size: shared pages split between the processes
that map them) from /proc/<pid>/smaps_rollup once the node is ready.

    .venv/bin/python bench/workers_memory.py [--n 2000000]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness import free_port, ready


def mem_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def run(config: Path, http: int, workers: int) -> list[tuple[int, int]]:
    cmd = [sys.executable, "-m", "s13eir.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)] if workers > 1 else cmd, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not all(ready(http + i) for i in range(workers)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("did not become ready")
            time.sleep(0.5)
        time.sleep(1)
        pids = children(proc.pid) if workers > 1 else [proc.pid]
        return [mem_kb(p) for p in pids]
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        black = tmp / "black.csv"
        tacs = [rng.randrange(10**7, 10**8) for _ in range(20_000)]
        with black.open("w") as f:
            f.write("imei,block_date,reasons\n")
            for _ in range(args.n):
                f.write(f"{rng.choice(tacs)}{rng.randrange(10**6):06d},20260101,stolen\n")
        http = free_port()
        cfg = {
            "node": {"origin_host": "eir.bench.test", "origin_realm": "bench.test"},
            "listen": [{"port": free_port()}],
            "store": {"lists": [{"path": str(black), "format": "dirbs-blacklist"}]},
            "metrics": {"port": http},
            "logging": {"level": "warning"},
        }
        config = tmp / "eir.yaml"
        config.write_text(yaml.safe_dump(cfg))
        alone = run(config, http, 1)[0]
        shared = run(config, http, 2)
    mb = 1024
    print(f"{args.n:,} IMEIs")
    print(f"one node loading the lists itself: Rss {alone[0] / mb:.0f} MB, Pss {alone[1] / mb:.0f} MB")
    for i, (rss, pss) in enumerate(shared):
        print(f"worker {i} with the shared mapped file:  Rss {rss / mb:.0f} MB, Pss {pss / mb:.0f} MB")
    total = sum(p for _, p in shared)
    print(f"2 workers shared: {total / mb:.0f} MB in all (Pss), against {2 * alone[1] / mb:.0f} MB for 2 unshared")


if __name__ == "__main__":
    main()
