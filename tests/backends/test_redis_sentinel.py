"""A node and the writer behind Redis Sentinel: lists loaded through the Sentinel, the
master killed and a replica promoted, and a change written after the failover reaching
the node. Skipped when redis-server is not installed."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import redis

from s13eir.backends.redis_client import connect
from s13eir.config import RedisConfig
from s13eir.config_loading import config_from_mapping
from s13eir.lists.redis_layout import Change
from s13eir.sync.writer import ListWriter
from tests.conftest import node_config, running_node, verdict
from tests.redis_seed import seed_list
from tests.services import RedisServer, _free_port, _wait_port, require

BLACK = "35209900176148"
LATER = "35450712345675"


class Sentinel:
    def __init__(self, workdir: Path, master_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 5000\n"
        )
        self.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-sentinel")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def test_failover_behind_sentinel(tmp_path: Path) -> None:
    require("redis-server")
    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(tmp_path / "replica")
    replica.command = lambda: [*RedisServer.command(replica), "--replicaof", "127.0.0.1", str(master.port)]  # type: ignore[method-assign]
    replica.start()
    sentinel = Sentinel(tmp_path / "sentinel", master.port)
    try:
        m = redis.Redis.from_url(master.url)
        seed_list(m, "black", [(BLACK, "stolen")])
        # Only writes a replica has acknowledged survive a failover (the documented guarantee).
        deadline = time.monotonic() + 20
        while m.wait(1, 1000) < 1:
            assert time.monotonic() < deadline, "the replica did not sync"
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
        cfg = node_config(store={"backend": "redis", "lists": [], "redis": {"url": url, "timeout_ms": 500}})
        async with running_node(config_from_mapping(cfg)) as rn:
            assert await verdict(rn, BLACK) == "BLACKLISTED"
            assert await verdict(rn, LATER) == "WHITELISTED"
            master.kill()
            writer = ListWriter(connect(RedisConfig(url=url), timeout_s=2), "s13eir")
            deadline = time.monotonic() + 30
            while True:  # until the Sentinel has promoted the replica and it takes writes
                try:
                    await writer.apply_changes([Change("add", "black", LATER, reason="stolen")])
                    break
                except Exception:
                    assert time.monotonic() < deadline, "no failover"
                    await asyncio.sleep(0.5)
            deadline = time.monotonic() + 15
            while await verdict(rn, LATER) != "BLACKLISTED":
                assert time.monotonic() < deadline, "the change written after the failover did not reach the node"
                await asyncio.sleep(0.2)
            assert await verdict(rn, BLACK) == "BLACKLISTED"
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
