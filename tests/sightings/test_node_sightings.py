"""A blacklisted phone attaching produces a sighting event on the broker; a
whitelisted one does not; the answer never waits for the broker."""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from s13eir.client import S13Client
from s13eir.config_loading import config_from_mapping
from tests.conftest import MME_HOST, MME_REALM, node_config, running_node
from tests.services import MosquittoBroker


async def test_sighting_published_for_black_not_for_white(mqtt_broker: MosquittoBroker) -> None:
    cfg = node_config(events={"url": mqtt_broker.url, "topic_prefix": "eir/sightings", "mask_imsi": True})
    got: list[tuple[str, dict[str, object]]] = []
    async with aiomqtt.Client("127.0.0.1", mqtt_broker.port, identifier="fraud-desk") as sub:
        await sub.subscribe("eir/sightings/#", qos=1)
        async with running_node(config_from_mapping(cfg)) as rn:
            c = S13Client(MME_HOST, MME_REALM)
            await c.connect(rn.host, rn.port)
            try:
                assert (await c.check("35450712345675")).verdict == "WHITELISTED"
                assert (await c.check("35209900176148", "001010000000002")).verdict == "BLACKLISTED"
            finally:
                await c.disconnect()

            async def first() -> None:
                async for msg in sub.messages:
                    got.append((str(msg.topic), json.loads(bytes(msg.payload))))  # type: ignore[arg-type]
                    return

            await asyncio.wait_for(first(), 10)
    topic, event = got[0]
    assert topic == "eir/sightings/blacklisted"
    assert event["imei"] == "35209900176148"
    assert event["origin_host"] == MME_HOST and event["origin_realm"] == MME_REALM
    assert event["imsi"] != "001010000000002" and str(event["imsi"]).startswith("00101")  # masked
    assert event["reason"]["list"] == "black"  # type: ignore[index]


async def test_answers_do_not_wait_for_an_absent_broker() -> None:
    cfg = node_config(events={"url": "mqtt://127.0.0.1:9", "queue_size": 5})  # nothing listens on port 9
    async with running_node(config_from_mapping(cfg)) as rn:
        c = S13Client(MME_HOST, MME_REALM, timeout=2)
        await c.connect(rn.host, rn.port)
        try:
            for _ in range(20):
                assert (await c.check("35209900176148")).verdict == "BLACKLISTED"
        finally:
            await c.disconnect()
        assert rn.node.sightings is not None
        assert rn.node.sightings.dropped == 15 and rn.node.sightings.queued == 5
