"""Sighting events: the record and its JSON form, and the publisher against a real mosquitto
(queued while the broker is away, delivered when it is back, overflow counted, offer() never waits)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable

import aiomqtt
import pytest

from s13eir.backends.mqtt_url import parse_mqtt_url
from s13eir.config import EventsConfig
from s13eir.decision.model import EquipmentStatus, Reason, Rule, Verdict
from s13eir.s13.application import Outcome
from s13eir.s13.ecr import EcrQuery
from s13eir.sightings.publisher import SightingPublisher
from s13eir.sightings.sighting import (
    Sighting,
    decode_sighting,
    encode_sighting,
    format_time,
    sighting_from_outcome,
    sighting_topic,
)
from tests.services import MosquittoBroker

EIR = "eir1.s13eir.test"
PREFIX = "test/sightings"
NOW = 1714564800.123  # 2024-05-01T12:00:00.123Z


def query(imei: str = "352099001761481", imsi: str | None = "001010123456789") -> EcrQuery:
    return EcrQuery(
        session_id="mme.s13eir.test;1;42",
        imei=imei,
        imei14=imei[:14],
        software_version=None,
        imsi=imsi,
        origin_host="mme.s13eir.test",
        origin_realm="s13eir.test",
    )


BLACK = Verdict(EquipmentStatus.BLACKLISTED, Reason(Rule.IMEI, "black", "ceir", "35209900176148", "stolen"))
GREY = Verdict(EquipmentStatus.GREYLISTED, Reason(Rule.TAC, "grey", "rules.yaml", "35209900", "old model"))
WHITE = Verdict(EquipmentStatus.WHITELISTED, Reason(Rule.POLICY, "", "", "whitelisted"))
UNKNOWN = Verdict(None, Reason(Rule.POLICY, "", "", "unknown"))


def sighting(i: int = 0, verdict: Verdict = BLACK) -> Sighting:
    s = sighting_from_outcome(Outcome(2001, verdict, query(imei=f"35209900{i:06d}1")), NOW + i)
    assert s is not None
    return s


# -- the record -------------------------------------------------------------------------------


def test_sighting_json_carries_who_where_when_and_why() -> None:
    s = sighting()
    msg = json.loads(encode_sighting(s, eir=EIR, event_id="e1"))
    assert msg == {
        "id": "e1",
        "time": "2024-05-01T12:00:00.123Z",
        "eir": EIR,
        "interface": "s13",
        "verdict": "BLACKLISTED",
        "result_code": 2001,
        "imei": "352099000000001",
        "imei14": "35209900000000",
        "software_version": None,
        "imsi": "001010123456789",
        "origin_host": "mme.s13eir.test",
        "origin_realm": "s13eir.test",
        "session_id": "mme.s13eir.test;1;42",
        "reason": {"rule": "imei", "list": "black", "source": "ceir", "entry": "35209900176148", "detail": "stolen"},
    }
    assert decode_sighting(encode_sighting(s, eir=EIR, event_id="e1")).reason.detail == "stolen"
    assert sighting_topic(PREFIX, s.verdict) == "test/sightings/blacklisted"


def test_imsi_is_masked_on_request() -> None:
    msg = decode_sighting(encode_sighting(sighting(), eir=EIR, mask=True))
    assert msg.imsi == "00101********89"
    assert len(msg.id) == 32


def test_which_outcomes_are_sightings() -> None:
    assert sighting_from_outcome(Outcome(2001, GREY, query()), NOW) is not None
    unknown = sighting_from_outcome(Outcome(5422, UNKNOWN, query()), NOW)
    assert unknown is not None and unknown.verdict == "EQUIPMENT_UNKNOWN"
    assert sighting_topic(PREFIX + "/", unknown.verdict) == "test/sightings/equipment_unknown"
    assert sighting_from_outcome(Outcome(2001, WHITE, query()), NOW) is None
    assert sighting_from_outcome(Outcome(2001, WHITE, query()), NOW, include_white=True) is not None
    assert sighting_from_outcome(Outcome(5004, None, query(), "malformed"), NOW) is None
    assert sighting_from_outcome(Outcome(3004, None, None), NOW) is None


def test_time_format() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


def test_mqtt_urls() -> None:
    e = parse_mqtt_url("mqtts://user:p%40ss@broker.example:8884")
    assert (e.host, e.port, e.username, e.password, e.tls) == ("broker.example", 8884, "user", "p@ss", True)
    assert "p@ss" not in str(e)
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883
    for bad in ("http://x", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


# -- the publisher against mosquitto ----------------------------------------------------------


@pytest.fixture
def broker(mqtt_broker: MosquittoBroker) -> MosquittoBroker:
    return mqtt_broker  # the shared fixture in conftest.py


def events_cfg(broker: MosquittoBroker, queue_size: int = 1000) -> EventsConfig:
    return EventsConfig(url=broker.url, topic_prefix=PREFIX, queue_size=queue_size, client_id="eir-test-pub")


def publisher(broker: MosquittoBroker, queue_size: int = 1000) -> SightingPublisher:
    return SightingPublisher(events_cfg(broker, queue_size), EIR, backoff_min_s=0.05, backoff_max_s=0.2)


async def subscribe_persistent(broker: MosquittoBroker, client_id: str) -> None:
    """Create a persistent session subscribed to every sighting, then leave: the broker
    queues what is published for it from now on."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(f"{PREFIX}/#", qos=1)


async def collect(broker: MosquittoBroker, client_id: str, until: Callable[[list[dict[str, object]]], bool],
                  timeout: float = 15.0) -> list[dict[str, object]]:  # fmt: skip
    """Messages of the persistent session (reconnecting if the broker restarts) until ``until``."""
    got: list[dict[str, object]] = []
    async with asyncio.timeout(timeout):
        while not until(got):
            try:
                # A short timeout: a connection accepted by a broker that is going down
                # never gets its CONNACK, and aiomqtt waits the whole timeout for it.
                async with aiomqtt.Client(
                    "127.0.0.1", broker.port, identifier=client_id, clean_session=False, timeout=1
                ) as c:
                    await c.subscribe(f"{PREFIX}/#", qos=1)
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        got.append({"topic": str(m.topic), **json.loads(m.payload)})
                        if until(got):
                            break
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)
    return got


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def test_offer_is_a_plain_function() -> None:
    # Not a coroutine: the answer path calls it and moves on; there is nothing to await.
    assert not inspect.iscoroutinefunction(SightingPublisher.offer)
    assert not inspect.iscoroutinefunction(SightingPublisher.offer_outcome)


async def test_offer_only_queues_whatever_the_broker_does(broker: MosquittoBroker) -> None:
    pub = publisher(broker)
    pub.start()
    await wait_for(lambda: pub.connected)
    # Connected: still, offer() returns without any network I/O; the task publishes later.
    for i in range(200):
        assert pub.offer(sighting(i)) is True
    assert (pub.queued, pub.published, pub.dropped) == (200, 0, 0)
    await wait_for(lambda: pub.published == 200)
    assert pub.queued == 0

    # Broker gone: offer() behaves exactly the same.
    await asyncio.to_thread(broker.kill)
    for i in range(200):
        assert pub.offer(sighting(i)) is True
    assert (pub.queued, pub.published, pub.dropped) == (200, 200, 0)
    assert await pub.stop(timeout=0.5) == 200  # nowhere to deliver them: counted as dropped
    assert pub.dropped == 200
    assert pub.offer(sighting()) is False  # stopped
    assert pub.dropped == 201


async def test_offered_while_the_broker_is_down_are_delivered_when_it_returns(broker: MosquittoBroker) -> None:
    await subscribe_persistent(broker, "fraud-desk")
    await asyncio.to_thread(broker.stop)  # graceful: the session is saved

    pub = publisher(broker)
    pub.start()
    verdicts = [BLACK, GREY, UNKNOWN]
    for i in range(30):
        pub.offer(sighting(i, verdicts[i % 3]))
    await asyncio.sleep(0.5)  # several connection attempts fail meanwhile
    assert not pub.connected
    assert (pub.queued, pub.published, pub.dropped) == (30, 0, 0)

    await asyncio.to_thread(broker.start)
    await wait_for(lambda: pub.published == 30)
    got = await collect(broker, "fraud-desk", lambda g: len({m["id"] for m in g}) >= 30)
    assert [m["imei"] for m in got] == [f"35209900{i:06d}1" for i in range(30)]  # all, in order
    assert {m["topic"] for m in got} == {
        "test/sightings/blacklisted",
        "test/sightings/greylisted",
        "test/sightings/equipment_unknown",
    }
    assert all(str(m["topic"]).endswith(str(m["verdict"]).lower()) for m in got)
    assert await pub.stop(timeout=2) == 0
    assert pub.dropped == 0


async def test_a_full_queue_drops_the_oldest_and_counts(broker: MosquittoBroker) -> None:
    await subscribe_persistent(broker, "fraud-desk")
    await asyncio.to_thread(broker.stop)
    pub = publisher(broker, queue_size=5)
    pub.start()
    for i in range(12):
        assert pub.offer(sighting(i)) is True
    assert (pub.queued, pub.dropped) == (5, 7)

    await asyncio.to_thread(broker.start)
    await wait_for(lambda: pub.published == 5)
    got = await collect(broker, "fraud-desk", lambda g: len(g) >= 5)
    assert [m["imei"] for m in got] == [f"35209900{i:06d}1" for i in range(7, 12)]  # the newest five
    assert await pub.stop(timeout=2) == 0
    assert pub.dropped == 7


async def test_nothing_lost_across_a_broker_restart(broker: MosquittoBroker) -> None:
    await subscribe_persistent(broker, "fraud-desk")
    pub = publisher(broker)
    pub.start()
    await wait_for(lambda: pub.connected)
    collector = asyncio.create_task(
        collect(broker, "fraud-desk", lambda g: len({m["id"] for m in g}) >= 300, timeout=30)
    )
    for i in range(150):
        pub.offer(sighting(i))
    await asyncio.to_thread(broker.restart)
    for i in range(150, 300):
        pub.offer(sighting(i))
    got = await collector
    # At least once: a resend after the restart carries the same id.
    assert {m["imei"] for m in got} == {f"35209900{i:06d}1" for i in range(300)}
    assert len({m["id"] for m in got}) == 300
    await wait_for(lambda: pub.queued == 0)
    assert pub.published >= 300 - pub.dropped and pub.dropped == 0
    assert await pub.stop(timeout=2) == 0
