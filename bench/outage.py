"""What an EIR node answers for listed phones while its Redis restarts without
persistence, under load: how many listed phones were answered WHITELISTED (the
number that must be 0), and how the answers split before, during and after.

Starts its own redis-server (no persistence) on a free loopback port, imports a
blacklist of ``--black`` and a greylist of ``--grey`` generated IMEIs with the
writer, starts ``s13eir serve`` (store.backend redis) and checks, over
``--connections`` Diameter connections, a random mix of listed and unlisted IMEIs
for ``--duration`` seconds. At 30% of the run Redis is restarted empty; at 60% the
lists are imported again. Every answer is classified by phase and by what the
phone is (black, grey, unlisted).

    .venv/bin/python bench/outage.py [--policy last_known] [--src DIR]

``--src DIR`` runs the node from another checkout's ``src`` (for example an older
commit in a git worktree), so the same scenario measures the code before a fix.
Bounded: the load loop ends at ``--duration``, each check times out after 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from harness import free_port, wait_ready
from s13eir.backends.redis_client import connect
from s13eir.client import S13Client
from s13eir.config import GuardsConfig, RedisConfig
from s13eir.lists.formats import ListSpec
from s13eir.sync.writer import ListWriter

NO_GUARDS = GuardsConfig(min_entries_to_guard=10**9)
Counts = Counter[tuple[str, str, str]]  # (phase, what the phone is, the answer) -> answers


def imeis(rng: random.Random, n: int, tac: int) -> list[str]:
    return [f"{tac:08d}{i:06d}" for i in rng.sample(range(10**6), n)]


async def import_lists(url: str, tmp: Path, black: list[str], grey: list[str]) -> None:
    r = connect(RedisConfig(url=url), timeout_s=60)
    w = ListWriter(r, "s13eir")
    for name, rows in (("black", black), ("grey", grey)):
        path = tmp / f"{name}.csv"
        path.write_text("imei,block_date,reasons\n" + "".join(f"{i},20260101,bench\n" for i in rows))
        await w.import_snapshot(ListSpec(str(path), "dirbs-blacklist"), name, guards=NO_GUARDS)
    await r.aclose()


async def load(port: int, mix: list[tuple[str, str]], args: argparse.Namespace, phase: list[str]) -> Counts:
    out: Counts = Counter()
    deadline = time.monotonic() + args.duration
    rng = random.Random(args.seed)

    async def one(n: int) -> None:
        c = S13Client(f"mme{n}.bench.test", "bench.test", timeout=2.0)
        await c.connect("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                kind, imei = rng.choice(mix)
                try:
                    res = await c.check(imei)
                    out[(phase[0], kind, res.verdict)] += 1
                except Exception as e:
                    out[(phase[0], kind, f"error:{type(e).__name__}")] += 1
                    return
        finally:
            await c.disconnect()

    await asyncio.gather(*(one(n) for n in range(args.connections)))
    return out


async def scenario(args: argparse.Namespace, tmp: Path) -> dict[str, int]:
    rng = random.Random(args.seed)
    black, grey = imeis(rng, args.black, 35209900), imeis(rng, args.grey, 35290611)
    unlisted = imeis(rng, 20_000, 35450712)
    redis_port, port, http = free_port(), free_port(), free_port()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    redis_cmd = [exe, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp)]  # fmt: skip
    redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{redis_port}/0"
    await asyncio.sleep(0.3)
    await import_lists(url, tmp, black, grey)
    cfg = {
        "node": {"origin_host": "eir.bench.test", "origin_realm": "bench.test"},
        "listen": [{"transport": "tcp", "address": "127.0.0.1", "port": port}],
        "peers": {"allow_unknown": True},
        "store": {"backend": "redis", "lists": [], "redis": {"url": url, "timeout_ms": 50}},
        "policy": {"store_unavailable": args.policy},
        "logging": {"level": "warning"},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": http},
    }
    config = tmp / "eir.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    node = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(http, node)
        # A third of the checks listed phones, as in the reproduction.
        mix = [("black", i) for i in rng.sample(black, min(len(black), 4000))]
        mix += [("grey", i) for i in grey] + [("unlisted", i) for i in rng.sample(unlisted, 8000)]
        phase = ["before"]
        task = asyncio.ensure_future(load(port, mix, args, phase))
        await asyncio.sleep(args.duration * 0.3)
        redis.terminate()
        redis.wait(10)
        redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)  # empty: no persistence
        phase[0] = "outage"
        await asyncio.sleep(args.duration * 0.3)
        await import_lists(url, tmp, black, grey)
        phase[0] = "after"
        counts = await task
    finally:
        node.terminate()
        node.wait(20)
        redis.terminate()
        redis.wait(10)
    return {" ".join(k): v for k, v in sorted(counts.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--black", type=int, default=50_000)
    ap.add_argument("--grey", type=int, default=500)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--policy", default="last_known")
    ap.add_argument("--src", default="", help="run the node from this src directory")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="s13eir-outage-") as d:
        counts = asyncio.run(scenario(args, Path(d)))
    listed_white = sum(v for k, v in counts.items() if k.split()[1] in ("black", "grey") and k.endswith("WHITELISTED"))
    print(json.dumps(counts, indent=1))
    print(
        f"policy {args.policy}, src {args.src or 'this checkout'}: listed phones answered WHITELISTED: {listed_white}"
    )
    sys.exit(1 if listed_white and not args.src else 0)


if __name__ == "__main__":
    main()
