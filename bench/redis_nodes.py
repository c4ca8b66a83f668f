"""What an EIR node on the Redis store costs: start time to ready with N IMEIs,
change-to-every-node latency, and the Bloom-positive lookup (confirmed in Redis,
micro-batched) against the Bloom-negative one, as a ratio.

Starts its own redis-server on a free loopback port, imports N generated IMEIs
with ``s13eir lists import``, then:

- times ``s13eir serve`` from launch to ``/readyz`` 200 (it loads the Bloom filter
  the writer saved in Redis);
- runs two nodes' list readers (``RedisLists``) in this process and measures, for
  200 changes applied one by one by the writer, the time until both have applied
  the change from the stream;
- measures ``facts()`` for phones on no list (Bloom negative, no I/O) and the
  confirmation of listed phones in Redis in batches of 64 concurrent lookups.

    .venv/bin/python bench/redis_nodes.py [--n 10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness import free_port, ready
from s13eir.backends.redis_client import connect
from s13eir.config import RedisConfig
from s13eir.lists.redis_layout import Change
from s13eir.lists.redis_store import RedisLists
from s13eir.sync.writer import ListWriter


def generate(path: Path, n: int, rng: random.Random) -> list[str]:
    tacs = [rng.randrange(10**7, 10**8) for _ in range(20_000)]
    sample: list[str] = []
    with path.open("w") as f:
        f.write("imei,block_date,reasons\n")
        for i in range(n):
            imei = f"{rng.choice(tacs)}{rng.randrange(10**6):06d}"
            f.write(f"{imei},20260101,stolen\n")
            if i % max(1, n // 20_000) == 0:
                sample.append(imei)
    return sample


async def change_latency(url: str, rng: random.Random) -> list[float]:
    writer = ListWriter(connect(RedisConfig(url=url), timeout_s=30), "s13eir")
    nodes = [RedisLists(connect(RedisConfig(url=url), timeout_s=5.0), "s13eir", timeout_s=0.5) for _ in range(2)]
    for node in nodes:
        await node.start()
    out = []
    try:
        for _ in range(200):
            imei = f"{rng.randrange(10**13, 10**14)}"
            seq = await writer.apply_changes([Change("add", "black", imei, reason="bench")])
            t0 = time.perf_counter()
            deadline = t0 + 10
            while any(node.seq < seq for node in nodes):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"change {seq} did not reach the nodes: {[n.seq for n in nodes]}")
                await asyncio.sleep(0.0005)
            out.append(time.perf_counter() - t0)
    finally:
        for node in nodes:
            await node.stop()
    return out


async def lookups(url: str, listed: list[str], rng: random.Random) -> tuple[float, float, float]:
    node = RedisLists(connect(RedisConfig(url=url), timeout_s=5.0), "s13eir", timeout_s=1.0, cache_entries=0)
    await node.start()
    try:
        unlisted = [f"{rng.randrange(10**13, 10**14)}" for _ in range(200_000)]
        t0 = time.perf_counter()
        for imei in unlisted:
            node.facts(imei, None)
        negative = (time.perf_counter() - t0) / len(unlisted)
        batch = 64
        t0, c0 = time.perf_counter(), time.process_time()
        done = 0
        for i in range(0, len(listed) - batch, batch):
            await asyncio.gather(*(node.fetch(imei, None) for imei in listed[i : i + batch]))
            done += batch
        positive = (time.perf_counter() - t0) / done
        # The node's own CPU per lookup; the rest of the wall time is Redis and the round trip.
        positive_cpu = (time.process_time() - c0) / done
        return negative, positive, positive_cpu
    finally:
        await node.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    args = ap.parse_args()
    rng = random.Random(11)
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rport = free_port()
        redis = subprocess.Popen([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                  "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{rport}/0"
            black = tmp / "black.csv"
            print(f"generating {args.n:,} IMEIs", file=sys.stderr)
            listed = generate(black, args.n, rng)
            port, http = free_port(), free_port()
            cfg = {
                "node": {"origin_host": "eir.bench.test", "origin_realm": "bench.test"},
                "listen": [{"port": port}],
                "store": {"backend": "redis", "redis": {"url": url}},
                "metrics": {"port": http},
                "logging": {"level": "warning"},
            }
            config = tmp / "eir.yaml"
            config.write_text(yaml.safe_dump(cfg))
            print("importing", file=sys.stderr)
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "s13eir.cli", "lists", "import", str(black), "--list", "black",
                            "--config", str(config)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
            imported = time.monotonic() - t0
            print("starting a node", file=sys.stderr)
            t0 = time.monotonic()
            node = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "serve", "--config", str(config)],
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                while not ready(http):
                    if node.poll() is not None or time.monotonic() - t0 > 300:
                        raise SystemExit("the node did not become ready")
                    time.sleep(0.05)
                start = time.monotonic() - t0
            finally:
                node.terminate()
                node.wait(30)
            print("measuring change latency", file=sys.stderr)
            latency = asyncio.run(change_latency(url, rng))
            print("measuring lookups", file=sys.stderr)
            negative, positive, positive_cpu = asyncio.run(lookups(url, listed, rng))
        finally:
            redis.terminate()
            redis.wait(30)
    q = statistics.quantiles(latency, n=100)
    print(f"IMEIs: {args.n:,}")
    print(f"import (s13eir lists import): {imported:.1f} s")
    print(f"node start to /readyz: {start:.2f} s")
    print(
        f"change to both nodes: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(latency) * 1000:.1f} ms"
    )
    print(f"lookup, Bloom negative (no I/O): {negative * 1e6:.2f} µs")
    print(f"lookup, Bloom positive confirmed in Redis, batches of 64: {positive * 1e6:.1f} µs "
          f"(one batch at a time; node CPU {positive_cpu * 1e6:.1f} µs)")  # fmt: skip
    print(f"ratio positive / negative: {positive / negative:.0f}x")


if __name__ == "__main__":
    main()
