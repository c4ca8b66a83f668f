"""Detection shared through Redis: what it costs in Redis memory, how fast two nodes'
batches go through it, and how long a clone seen on two nodes takes to become a case.

1. **Memory and throughput.** The synthetic national day of bench/detection_trace.py
   (--devices, seed) is fed, in batches of --batch sightings, alternately through two
   nodes' shared detection (``SharedDetection``, each with its own client) on a
   private redis-server. Reported: Redis memory (``used_memory``) per million active
   devices, sightings per second through the shared path against the embedded detector
   on the same day in the same run (the ratio), compare-and-set conflicts, and the
   precision/recall per rule, which must equal the embedded detector's.
2. **Latency across two nodes.** Two ``s13eir serve`` processes on that Redis, with
   detection on, and an MME on each (Madrid, Barcelona). For --clones IMEIs, one IMSI is
   checked on node A, another on node B; the time from node B's answer to the case in
   Redis is the detection latency (the drain runs every 100 ms).

    .venv/bin/python bench/detection_cluster.py [--devices 1000000] [--seed 1] [--clones 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import yaml

from detection_trace import LOCATIONS, PLANTED, TARGETS, Day
from harness import PY, Server, free_port
from s13eir.client import S13Client
from s13eir.detection.detector import Detector
from s13eir.detection.observation import Observation
from s13eir.detection.rules import DetectionConfig
from s13eir.detection_shared import SharedDetection

PREFIX = "s13eir"


def scores(day: Day, flagged: dict[str, set[str]]) -> dict[str, tuple[int, float, float]]:
    kinds: dict[str, set[str]] = {}
    for d, imei in enumerate(day.imeis):
        kinds.setdefault(imei, set()).add(day.kind[d])
    planted = {imei for imei, k in kinds.items() if k & PLANTED}
    out = {}
    for rule, target in TARGETS.items():
        got = flagged.get(rule, set())
        want = {imei for imei, k in kinds.items() if target in k}
        out[rule] = (
            len(got),
            len(got & planted) / len(got) if got else 0.0,
            len(got & want) / len(want) if want else 0.0,
        )
    return out


def batches(observations: list[Observation], size: int) -> list[list[Observation]]:
    return [observations[i : i + size] for i in range(0, len(observations), size)]


async def shared_day(url: str, parts: list[list[Observation]]) -> tuple[dict[str, set[str]], float, int]:
    config = DetectionConfig(enabled=True)
    nodes = [SharedDetection(aioredis.Redis.from_url(url), PREFIX, Detector(config, LOCATIONS)) for _ in range(2)]
    flagged: dict[str, set[str]] = {}
    started = time.perf_counter()
    for i, batch in enumerate(parts):
        for f in await nodes[i % 2].observe(batch, batch[-1].t):
            flagged.setdefault(f.rule, set()).add(f.imei14)
    seconds = time.perf_counter() - started
    conflicts = sum(n.conflicts for n in nodes)
    for n in nodes:
        await n.redis.aclose()
    return flagged, seconds, conflicts


def embedded_day(parts: list[list[Observation]]) -> tuple[dict[str, set[str]], float]:
    detector = Detector(DetectionConfig(enabled=True), LOCATIONS)
    flagged: dict[str, set[str]] = {}
    started = time.perf_counter()
    for batch in parts:
        now = batch[-1].t
        for obs in batch:
            for f in detector.observe(obs, now):
                flagged.setdefault(f.rule, set()).add(f.imei14)
    return flagged, time.perf_counter() - started


def node_config(tmp: Path, url: str, name: str) -> tuple[Path, int, int]:
    port, http = free_port(), free_port()
    cfg: dict[str, Any] = {
        "node": {"origin_host": f"{name}.bench.test", "origin_realm": "bench.test"},
        "listen": [{"transport": "tcp", "address": "127.0.0.1", "port": port}],
        "peers": {
            "list": [
                {"origin_host": "mme-madrid", "origin_realm": "bench.test", "location": _where("mme-madrid")},
                {"origin_host": "mme-barcelona", "origin_realm": "bench.test", "location": _where("mme-barcelona")},
            ]
        },
        "store": {"backend": "redis", "redis": {"url": url}},
        "detection": {"enabled": True},
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": http},
        "logging": {"level": "warning"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port, http


def _where(peer: str) -> dict[str, Any]:
    loc = LOCATIONS[peer]
    return {"region": loc.region, "lat": loc.lat, "lon": loc.lon}


async def latency(url: str, ports: tuple[int, int], clones: int) -> list[float]:
    r = aioredis.Redis.from_url(url)
    a, b = S13Client("mme-madrid", "bench.test"), S13Client("mme-barcelona", "bench.test")
    await a.connect("127.0.0.1", ports[0])
    await b.connect("127.0.0.1", ports[1])
    out = []
    try:
        for i in range(clones):
            imei = f"3545071{i:07d}"
            await a.check(imei, f"21401{2 * i:010d}")
            await b.check(imei, f"21401{2 * i + 1:010d}")
            t0 = time.perf_counter()
            while not await r.exists(f"{PREFIX}:det:case:{imei}"):
                if time.perf_counter() - t0 > 10:
                    raise SystemExit(f"no case for {imei} after 10 s")
                await asyncio.sleep(0.001)
            out.append(time.perf_counter() - t0)
    finally:
        await a.disconnect()
        await b.disconnect()
        await r.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--clones", type=int, default=200)
    args = ap.parse_args()
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    print(f"generating {args.devices:,} devices, seed {args.seed}", file=sys.stderr)
    day = Day(args.devices, 1, args.seed)
    observations = day.observations()
    parts = batches(observations, args.batch)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rport = free_port()
        url = f"redis://127.0.0.1:{rport}/0"
        server = Server([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                         "--dir", str(tmp)], rport, None)  # fmt: skip
        try:
            sync = redis.Redis.from_url(url)
            base = int(sync.info("memory")["used_memory"])
            print("embedded detector", file=sys.stderr)
            embedded, embedded_s = embedded_day(parts)
            print("shared detection, two nodes", file=sys.stderr)
            shared, shared_s, conflicts = asyncio.run(shared_day(url, parts))
            used = int(sync.info("memory")["used_memory"]) - base
            keys = int(sync.dbsize())
            sync.flushall()
            print("two nodes: latency", file=sys.stderr)
            nodes = []
            ports = []
            black = tmp / "black.csv"
            black.write_text("imei,block_date,reasons\n35875105123456,20260101,stolen\n")
            for name in ("eir-a", "eir-b"):
                config, port, http = node_config(tmp, url, name)
                if not nodes:  # the nodes are ready once the store holds lists
                    subprocess.run([PY, "-m", "s13eir.cli", "lists", "import", str(black), "--list", "black",
                                    "--config", str(config)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
                nodes.append(Server([PY, "-m", "s13eir.cli", "serve", "--config", str(config)], port, http))
                ports.append(port)
            try:
                lat = asyncio.run(latency(url, (ports[0], ports[1]), args.clones))
            finally:
                for n in nodes:
                    n.stop()
        finally:
            server.stop()
    active = len(set(day.imeis))
    print(f"{args.devices:,} devices, 1 day, seed {args.seed}: {len(observations):,} sightings, "
          f"batches of {args.batch:,}, two nodes alternating")  # fmt: skip
    print(f"Redis memory: {used / 2**20:,.1f} MiB for {active:,} active devices ({keys:,} keys): "
          f"{used / active * 1e6 / 2**20:,.0f} MiB per million ({used / active:.0f} bytes a device)")  # fmt: skip
    n = len(observations)
    print(f"shared path: {n / shared_s:,.0f} sightings/s; embedded detector {n / embedded_s:,.0f}/s "
          f"(shared / embedded {embedded_s / shared_s:.2f}); compare-and-set conflicts {conflicts:,}")  # fmt: skip
    same = shared == embedded
    print(f"findings equal to the embedded detector's: {'yes' if same else 'NO'}")
    print(f"{'rule':<20} {'flagged':>8} {'precision':>10} {'recall':>8}")
    for rule, (n, precision, recall) in scores(day, shared).items():
        print(f"{rule:<20} {n:>8,} {precision:>10.3f} {recall:>8.3f}")
    q = statistics.quantiles(lat, n=100)
    print(f"clone on two nodes to case in Redis ({len(lat)} clones): p50 {q[49] * 1000:.0f} ms, "
          f"p99 {q[98] * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")  # fmt: skip
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
