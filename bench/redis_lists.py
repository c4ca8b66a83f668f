"""Import N IMEIs into Redis with the list writer (a measurement, not a test).

Starts its own redis-server on a free loopback port (never 6379) in a temporary
directory without persistence, generates a ``dirbs-blacklist`` file with a
realistic shape (20,000 TACs with Zipf-like sizes, random serial numbers, a few
reasons), imports it with ``ListWriter.import_snapshot`` and prints: the import
time (load, then verify and switch), the writer process's peak RSS, Redis
``used_memory`` per million IMEIs, the OBJECT ENCODING of a sample of buckets and
the Bloom filter's size. ``--reimport`` imports the same file again (the
"unchanged" path a resync takes: load, verify, compare with the current
generation). Run from the repository root:

    .venv/bin/python bench/redis_lists.py --n 2000000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from s13eir.config import GuardsConfig
from s13eir.lists.formats import ListSpec
from s13eir.lists.redis_layout import k_bloom, k_current
from s13eir.sync.writer import ListWriter

REASONS = (
    "IMEI found on local stolen list",
    "duplicate IMEI detected",
    "IMEI not in GSMA TAC DB",
    "duplicate IMEI detected|IMEI not in GSMA TAC DB",
    "reported lost by subscriber",
)
REASON_WEIGHTS = (50, 25, 15, 7, 3)
SERIALS = 1_000_000  # 6-digit serial numbers per TAC
PREFIX = "bench"


def tac_sizes(n: int, tacs: int, s: float, rng: random.Random) -> list[int]:
    """Sizes of ``tacs`` TACs summing to ``n``, Zipf-like (rank^-s), each at most half a TAC's serials."""
    weights = [1 / (k**s) for k in range(1, tacs + 1)]
    total = sum(weights)
    sizes = [min(SERIALS // 2, int(n * w / total)) for w in weights]
    short = n - sum(sizes)
    i = 0
    while short > 0:  # spread the rounding and the capped excess over the tail
        room = SERIALS // 2 - sizes[i % tacs]
        add = min(room, short, max(1, short // tacs))
        sizes[i % tacs] += add
        short -= add
        i += 1
    rng.shuffle(sizes)
    return sizes


def generate(path: str, n: int, tacs: int, s: float, seed: int) -> None:
    """Write the file TAC by TAC (memory: one TAC's serials at a time)."""
    rng = random.Random(seed)
    sizes = tac_sizes(n, tacs, s, rng)
    tac_numbers = rng.sample(range(35_000_000, 36_000_000), tacs // 2) + rng.sample(
        range(86_000_000, 87_000_000), tacs - tacs // 2
    )
    with open(path, "w", buffering=1 << 20) as f:
        f.write("imei,block_date,reasons\n")
        for tac, size in zip(tac_numbers, sizes, strict=True):
            serials = rng.sample(range(SERIALS), size)
            reasons = rng.choices(REASONS, REASON_WEIGHTS, k=size)
            f.writelines(f"{tac:08d}{sn:06d},20240301,{why}\n" for sn, why in zip(serials, reasons, strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    assert port != 6379
    return port


def start_redis(workdir: str, listpack_entries: int | None) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir, "--save", "", "--appendonly", "no"]
    if listpack_entries is not None:
        args += ["--hash-max-listpack-entries", str(listpack_entries)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


async def used_memory(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def redis_cpu(r: aioredis.Redis) -> float:
    cpu = await r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def encodings(r: aioredis.Redis, g: int, sample: int, rng: random.Random) -> tuple[dict[str, int], int, int]:
    """(encoding -> buckets, entries in hashtable buckets, entries) over every bucket of ``g``
    (HLEN is cheap) with OBJECT ENCODING from a random sample of them."""
    keys = [k async for k in r.scan_iter(match=f"{PREFIX}:g:{g}:e:*", count=1000)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hlen(k)
    lengths = await pipe.execute()
    chosen = rng.sample(range(len(keys)), min(sample, len(keys)))
    pipe = r.pipeline(transaction=False)
    for i in chosen:
        pipe.object("encoding", keys[i])
    counts: dict[str, int] = {}
    for enc in await pipe.execute():
        counts[enc.decode()] = counts.get(enc.decode(), 0) + 1
    limit = int((await r.config_get("hash-max-listpack-entries"))["hash-max-listpack-entries"])
    big = sum(n for n in lengths if n > limit)
    mean = sum(lengths) / max(1, len(keys))
    print(f"  buckets: {len(keys):,}, entries per bucket: mean {mean:.1f}, max {max(lengths, default=0):,}")
    return counts, big, sum(lengths)


async def run(args: argparse.Namespace, path: str, port: int) -> None:
    r = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=300)
    base = await used_memory(r)
    w = ListWriter(r, PREFIX)
    guards = GuardsConfig()
    last_progress = [0.0]

    def progress(rows: int) -> None:
        last_progress[0] = time.perf_counter()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0, rcpu0 = time.process_time(), await redis_cpu(r)
    t0 = time.perf_counter()
    rep = await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=guards, progress=progress)
    t1 = time.perf_counter()
    cpu1, rcpu1 = time.process_time(), await redis_cpu(r)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = int(await r.hget(k_current(PREFIX), "black"))
    mem = await used_memory(r) - base
    bloom = int(await r.strlen(k_bloom(PREFIX, g)))
    n = rep.count
    print(f"import: {rep.status}, {rep.rows:,} rows -> {n:,} entries in {t1 - t0:.1f} s"
          f" ({rep.rows / (t1 - t0):,.0f} rows/s): load {last_progress[0] - t0:.1f} s,"
          f" verify + switch {t1 - last_progress[0]:.1f} s")  # fmt: skip
    print(f"CPU: writer {cpu1 - cpu0:.1f} s, redis-server {rcpu1 - rcpu0:.1f} s (wall time depends on other load)")
    print(f"writer process peak RSS: {rss0 / 1024:.0f} MB before the import, {rss1 / 1024:.0f} MB after")
    per_m = mem / (n / 1e6)
    print(f"redis used_memory: {mem / 2**20:.1f} MiB for the generation ({per_m / 2**20:.1f} MiB per million IMEIs,"
          f" {mem / n:.1f} B/IMEI); without the Bloom string: {(mem - bloom) / n:.1f} B/IMEI")  # fmt: skip
    print(f"bloom filter: {bloom:,} bytes ({bloom / 2**20:.1f} MiB) at fp 0.1 %")
    counts, big, total = await encodings(r, g, args.sample, random.Random(args.seed))
    print(f"  OBJECT ENCODING of {sum(counts.values())} sampled buckets: {counts}")
    print(f"  entries in buckets above hash-max-listpack-entries (hashtable): {big:,} ({big / max(1, total):.1%})")
    if args.reimport:
        t2, cpu2, rcpu2 = time.perf_counter(), time.process_time(), await redis_cpu(r)
        rep2 = await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=guards)
        t3, cpu3, rcpu3 = time.perf_counter(), time.process_time(), await redis_cpu(r)
        peak = int((await r.info("memory"))["used_memory_peak"]) - base
        print(f"re-import of the same file: {rep2.status} in {t3 - t2:.1f} s (CPU: writer {cpu3 - cpu2:.1f} s,"
              f" redis-server {rcpu3 - rcpu2:.1f} s)")  # fmt: skip
        print(f"redis used_memory peak with two generations: {peak / 2**20:.0f} MiB")
    await r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="IMEIs (default 10,000,000)")
    parser.add_argument("--tacs", type=int, default=20_000)
    parser.add_argument("--zipf", type=float, default=0.8, help="Zipf exponent of the TAC sizes (default 0.8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample", type=int, default=2000, help="buckets sampled for OBJECT ENCODING")
    parser.add_argument("--listpack-entries", type=int, default=None, help="redis hash-max-listpack-entries")
    parser.add_argument("--reimport", action="store_true", help="also time a re-import of the same file")
    parser.add_argument("--file", default=None, help="reuse (or keep) the generated file at this path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s13eir-bench-") as tmp:
        path = args.file or str(Path(tmp) / "blacklist.csv")
        if not Path(path).exists():
            t = time.perf_counter()
            # In a child process, so that the writer's RSS below is the import's alone.
            child = multiprocessing.Process(target=generate, args=(path, args.n, args.tacs, args.zipf, args.seed))
            child.start()
            child.join()
            print(f"generated {path}: {Path(path).stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s")
        proc, port = start_redis(tmp, args.listpack_entries)
        print(f"redis-server on 127.0.0.1:{port}, hash-max-listpack-entries {args.listpack_entries or 'default'}")
        try:
            asyncio.run(run(args, path, port))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
