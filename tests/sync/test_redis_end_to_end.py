"""The whole chain on real services: a master-list snapshot imported by ``s13eir
sync`` into Redis, a delta over MQTT, and two running EIR nodes that both turn
the phone BLACKLISTED within a second of the change being applied."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiomqtt

from s13eir.config_loading import config_from_mapping
from s13eir.lists.redis_layout import Change
from s13eir.sync.changeset import encode_changeset
from s13eir.sync.process import run_sync
from tests.conftest import SAMPLE_LISTS, RunningNode, node_config, running_node, verdict
from tests.services import MosquittoBroker, RedisServer

LISTED = "35209900176148"
NEW = "35450712345675"


async def until(rn: RunningNode, imei: str, want: str, within: float) -> float:
    t0 = time.monotonic()
    while (got := await verdict(rn, imei)) != want:
        assert time.monotonic() - t0 < within, f"{imei} still {got} after {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_snapshot_then_mqtt_delta_reaches_two_nodes(
    redis_server: RedisServer, mqtt_broker: MosquittoBroker
) -> None:
    cfg: dict[str, Any] = node_config(
        store={"backend": "redis", "lists": [], "redis": {"url": redis_server.url}},
        sync={
            "snapshots": [{"path": str(SAMPLE_LISTS / "blacklist.csv"), "format": "dirbs-blacklist", "list": "black"}],
            "mqtt": {"url": mqtt_broker.url, "topic": "ceir/changes", "client_id": "eir-sync-test", "feed": "ceir"},
        },
    )
    config = config_from_mapping(cfg)
    stop = asyncio.Event()
    sync = asyncio.create_task(run_sync(config, stop=stop, install_signals=False))
    try:
        async with running_node(config) as a, running_node(config) as b:
            for rn in (a, b):
                await until(rn, LISTED, "BLACKLISTED", 20)  # the snapshot, imported by sync
                assert await verdict(rn, NEW) == "WHITELISTED"
            async with aiomqtt.Client("127.0.0.1", mqtt_broker.port, identifier="ceir") as pub:
                change = Change("add", "black", NEW, reason="reported stolen")
                await pub.publish("ceir/changes", encode_changeset(1, [change], feed="ceir"), qos=1)
                # Both nodes must see it within 1 s of it being applied; the broker hop and the
                # sync process's apply come on top, so allow them a few seconds in all.
                waited = await asyncio.gather(until(a, NEW, "BLACKLISTED", 5), until(b, NEW, "BLACKLISTED", 5))
                remove = Change("remove", "black", LISTED)
                await pub.publish("ceir/changes", encode_changeset(2, [remove], feed="ceir"), qos=1)
                await asyncio.gather(until(a, LISTED, "WHITELISTED", 5), until(b, LISTED, "WHITELISTED", 5))
            assert max(waited) < 5
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            assert await asyncio.wait_for(sync, 15) == 0
