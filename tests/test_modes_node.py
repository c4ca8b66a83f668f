"""The operating modes in a running node, over real TCP (S13) and HTTP/2 (N5g-eir): the
same verdict on both for every kind of device, a grace that ends in a block in virtual
time, grace events published to a real mosquitto, authorization mode's pairing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import MME_HOST, RunningNode, node_config, running_node
from tests.sbi_helpers import RESOURCE, h2_client
from tests.services import MosquittoBroker

REGISTERED = "35111111111110"  # on the white list below
NEW = "35450712345675"  # on no list
BLACK = "35875105123456"  # on the sample blacklist
HOME, ROAMER = "214010000000001", "208150000000001"
DAY = 86400.0


def modes_config(tmp_path: Path, **modes: Any) -> Any:
    white = tmp_path / "white.csv"
    white.write_text(f"imei,list,reason\n{REGISTERED},white,registered by its owner\n")
    cfg = node_config(sbi={"address": "127.0.0.1", "port": 0}, modes={"home_plmns": ["21401"], **modes})
    cfg["store"]["lists"].append({"path": str(white), "format": "csv"})
    return cfg


async def both(rn: RunningNode, imei: str, imsi: str) -> tuple[int, int]:
    """The Equipment-Status over S13 and over N5g-eir for the same device."""
    m = await M.Mme.open(rn.host, rn.port, origin_host=MME_HOST)
    try:
        ans = await m.request(M.to_bytes(M.ecr(imei, imsi, origin_host=MME_HOST)))
        assert ans.result_code == 2001
        s13 = int(ans.equipment_status)
    finally:
        await m.close()
    port = next(p for t, _, p in rn.node.bound if t == "sbi")
    async with h2_client(f"http://127.0.0.1:{port}") as c:
        r = await c.get(RESOURCE, params={"pei": f"imei-{imei}0", "supi": f"imsi-{imsi}"})
        assert r.status_code == 200
        n5g = {"WHITELISTED": 0, "BLACKLISTED": 1, "GREYLISTED": 2}[r.json()["status"]]
    return s13, n5g


async def test_restrictive_mode_gives_the_same_verdicts_on_s13_and_n5g_eir(
    tmp_path: Path, mqtt_broker: MosquittoBroker
) -> None:
    msisdns = tmp_path / "msisdn.csv"
    msisdns.write_text(f"imsi,msisdn\n{HOME},+34600000001\n")
    cfg = modes_config(tmp_path, mode="restrictive", grace={"periods_days": {"unregistered": 60}},
                       msisdn_map=str(msisdns))  # fmt: skip
    cfg["events"] = {"url": mqtt_broker.url}
    async with aiomqtt.Client("127.0.0.1", mqtt_broker.port) as desk, running_node(config_from_mapping(cfg)) as rn:
        await desk.subscribe("s13eir/grace/#", qos=1)
        modes = rn.node.modes
        assert modes is not None
        now = [1.8e9]
        modes.clock = lambda: now[0]
        assert await both(rn, REGISTERED, HOME) == (M.WHITELISTED, M.WHITELISTED)  # registered
        assert await both(rn, BLACK, HOME) == (M.BLACKLISTED, M.BLACKLISTED)  # no mode unblocks it
        assert await both(rn, NEW, ROAMER) == (M.WHITELISTED, M.WHITELISTED)  # a roamer: as permissive
        assert await both(rn, NEW, HOME) == (M.GREYLISTED, M.GREYLISTED)  # unregistered: in grace
        seen = json.loads((await asyncio.wait_for(anext(aiter(desk.messages)), 10)).payload)  # type: ignore[arg-type]
        assert seen["kind"] == "seen" and seen["imei"] == NEW and seen["imsi"] == HOME
        assert seen["msisdn"] == "34600000001"  # from the map, for the SMS
        assert seen["deadline"] == 1.8e9 + 60 * DAY and seen["reason"] == "unregistered"
        assert len(modes.graces) == 1  # S13 and N5g-eir saw one device: one record
        now[0] += 59 * DAY
        assert await both(rn, NEW, HOME) == (M.GREYLISTED, M.GREYLISTED)
        now[0] += DAY  # the deadline, exactly
        assert await both(rn, NEW, HOME) == (M.BLACKLISTED, M.BLACKLISTED)
        blocked = json.loads((await asyncio.wait_for(anext(aiter(desk.messages)), 10)).payload)  # type: ignore[arg-type]
        assert blocked["kind"] == "blocked" and blocked["stage"] == "blocked"


async def test_authorization_mode_pairs_and_a_second_subscriber_breaks_it(tmp_path: Path) -> None:
    pairing = {"enabled": True, "auto_pair": True, "max_imsis_per_imei": 1, "broken": "blacklisted"}
    cfg = modes_config(tmp_path, mode="authorization", pairing=pairing)
    async with running_node(config_from_mapping(cfg)) as rn:
        assert await both(rn, NEW, HOME) == (M.WHITELISTED, M.WHITELISTED)  # paired on first sight
        modes = rn.node.modes
        assert modes is not None and modes.pairings.pairs(NEW)[HOME].origin == "auto"
        assert await both(rn, NEW, "214010000000002") == (M.BLACKLISTED, M.BLACKLISTED)  # past the limit
        assert await both(rn, NEW, HOME) == (M.WHITELISTED, M.WHITELISTED)


async def test_permissive_mode_without_pairing_keeps_no_state(tmp_path: Path) -> None:
    async with running_node(config_from_mapping(modes_config(tmp_path))) as rn:
        assert rn.node.modes is None and rn.node.app.modes is None  # today's answer, today's path
        assert await both(rn, NEW, HOME) == (M.WHITELISTED, M.WHITELISTED)


async def test_an_imsi_range_gets_its_own_verdict_on_both_interfaces(tmp_path: Path) -> None:
    iot = {"prefix": "2140170", "policy": "greylisted", "name": "IoT fleet"}
    async with running_node(config_from_mapping(modes_config(tmp_path, imsi_ranges=[iot]))) as rn:
        assert rn.node.modes is not None  # permissive, but a range has a verdict of its own
        assert await both(rn, NEW, "214017000000001") == (M.GREYLISTED, M.GREYLISTED)
        assert await both(rn, NEW, HOME) == (M.WHITELISTED, M.WHITELISTED)


def test_overlapping_imsi_ranges_stop_the_start(tmp_path: Path) -> None:
    from s13eir.config import ConfigError
    from s13eir.node import Node

    ranges = [{"prefix": "21401", "policy": "bypass"}, {"prefix": "214017", "policy": "greylisted"}]
    with pytest.raises(ConfigError, match=r"modes\.imsi_ranges: IMSI ranges .* overlap"):
        Node(config_from_mapping(modes_config(tmp_path, imsi_ranges=ranges)))


async def test_a_firmware_rule_greylists_on_both_interfaces(tmp_path: Path) -> None:
    rule = {"tac": NEW[:8], "from": "00", "to": "03", "name": "CVE-2026-1234 baseband"}
    async with running_node(config_from_mapping(modes_config(tmp_path, sv_rules=[rule]))) as rn:
        port = next(p for t, _, p in rn.node.bound if t == "sbi")
        for sv, want in (("02", M.GREYLISTED), ("07", M.WHITELISTED)):
            m = await M.Mme.open(rn.host, rn.port, origin_host=MME_HOST)
            try:
                ans = await m.request(M.to_bytes(M.ecr(NEW, HOME, sv, origin_host=MME_HOST)))
                assert ans.result_code == 2001 and int(ans.equipment_status) == want
            finally:
                await m.close()
            async with h2_client(f"http://127.0.0.1:{port}") as c:
                r = await c.get(RESOURCE, params={"pei": f"imeisv-{NEW}{sv}", "supi": f"imsi-{HOME}"})
                assert r.json()["status"] == ("GREYLISTED" if want == M.GREYLISTED else "WHITELISTED")


def test_a_bad_msisdn_map_stops_the_start_with_its_line(tmp_path: Path) -> None:
    from s13eir.config import ConfigError
    from s13eir.node import Node

    bad = tmp_path / "msisdn.csv"
    bad.write_text(f"imsi,msisdn\n{HOME},34600000001\n{HOME}\n")
    with pytest.raises(ConfigError, match=r"msisdn\.csv:3: not imsi,msisdn"):
        Node(config_from_mapping(modes_config(tmp_path, mode="restrictive", msisdn_map=str(bad))))


async def test_grace_events_are_posted_to_the_webhook_at_least_once(tmp_path: Path) -> None:
    """A real HTTP receiver on loopback that answers 503 first: the event is retried, in
    order, with the configured Authorization header."""
    got: list[tuple[bytes, dict[bytes, bytes]]] = []
    answers = [b"503 Service Unavailable", b"200 OK"]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:] if x)}
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                status = answers.pop(0) if answers else b"200 OK"
                if status.startswith(b"200"):
                    got.append((body, headers))
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hook = {"url": f"http://127.0.0.1:{port}/grace", "authorization": "Bearer s3cret", "timeout_s": 2}
    try:
        async with running_node(config_from_mapping(modes_config(tmp_path, mode="restrictive", webhook=hook))) as rn:
            assert await both(rn, NEW, HOME) == (M.GREYLISTED, M.GREYLISTED)
            for _ in range(200):  # the first POST fails; the retry comes 0.5 s later
                if got:
                    break
                await asyncio.sleep(0.02)
            ((body, headers),) = got
            event = json.loads(body)
            assert event["kind"] == "seen" and event["imei"] == NEW and event["imsi"] == HOME
            assert headers[b"authorization"] == b"Bearer s3cret"
            metrics = rn.node.webhook
            assert metrics is not None and metrics.sent == 1 and metrics.failures == 1 and metrics.dropped == 0
    finally:
        server.close()
