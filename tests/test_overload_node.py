"""Admission control on a live node over TCP, both stores: an overload (a held event loop,
or Redis lookups piling up) is answered with 3004 for a share of the requests and OC-OLR
reports for DOIC peers, every request is answered, and the node recovers by itself."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import RunningNode, free_port, node_config, running_node
from tests.lists.test_redis_node import BLACK, redis_config, seed
from tests.mme import Answer, Mme
from tests.services import RedisServer

pytestmark = pytest.mark.timeout(60)

MME2 = "mme2.s13eir.test"
OC_SUPPORTED_FEATURES, OC_FEATURE_VECTOR, OC_OLR = 621, 622, 623
OVERLOAD = {"delay_ms": 20, "step_percent": 50, "hold_s": 0.5, "validity_s": 3}


def features() -> bytes:
    return M.grouped(OC_SUPPORTED_FEATURES, M.avp(OC_FEATURE_VECTOR, (1).to_bytes(8, "big"), flags=0), flags=0)


def doic_ecr(imei: str = M.IMEI_UNLISTED) -> bytes:
    return M.with_avps(M.to_bytes(M.ecr(imei, origin_host=MME2)), features())


async def metric(rn: RunningNode, name: str) -> float:
    return await asyncio.to_thread(_metric, rn, name)


def _metric(rn: RunningNode, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{rn.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not exported")


async def answers(m: Mme, requests: list[bytes], also: list[bytes] = ()) -> list[Answer]:  # type: ignore[assignment]
    """Send the requests back to back; every one (and every one of ``also``, sent before)
    must be answered, in any order."""
    ids = {M.request_ids(r)[1] for r in [*requests, *also]}
    await m.send(b"".join(requests))
    out = []
    while len(out) < len(ids):
        a = await m.read_answer(timeout=10)
        if a.is_request and a.command == M.CMD_DWR:
            await m.send(M.dwa_for(a))
            continue
        assert a.hbh in ids
        out.append(a)
    return out


def olr(a: Answer) -> dict[int, int]:
    (report,) = a.find(OC_OLR)
    return {c.code: int.from_bytes(c.data, "big") for c in report.children()}


async def wait_reduction(rn: RunningNode, pred: Any, what: str) -> None:
    deadline = time.monotonic() + 15
    while not pred(await metric(rn, "s13eir_overload_reduction_percent")):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def hold_the_loop(seconds: float) -> None:
    """A loop that cannot keep up: held 150 ms at a time (the probe's 100 ms timer late on
    every sample, a sustained overload, unlike one stall), with only a moment between."""
    await asyncio.sleep(0.15)  # let the lag probe arm its timer
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.15)
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def test_a_held_loop_sheds_with_3004_reports_to_doic_peers_and_recovers() -> None:
    cfg = config_from_mapping(node_config(diameter={"overload": OVERLOAD}))
    async with running_node(cfg) as rn:
        plain = await Mme.open(rn.host, rn.port)
        doic = await Mme.open(rn.host, rn.port, origin_host=MME2)
        before = await answers(plain, [M.to_bytes(M.ecr()) for _ in range(20)])
        assert {a.result_code for a in before} == {2001} and not any(a.find(OC_OLR) for a in before)

        await hold_the_loop(0.5)
        assert await metric(rn, "s13eir_overload_reduction_percent") >= 50
        got = await answers(plain, [M.to_bytes(M.ecr()) for _ in range(100)])
        codes = [a.result_code for a in got]
        assert codes.count(3004) + codes.count(2001) == 100 and codes.count(3004) >= 40
        busy = next(a for a in got if a.result_code == 3004)
        assert busy.e_bit and busy.error_message == "overloaded" and busy.find(M.AVP_SESSION_ID)
        assert await metric(rn, "s13eir_overload_refused_total") == codes.count(3004)

        await asyncio.sleep(0.25)  # calm samples: no longer behind, still shedding (hold_s)
        assert await metric(rn, "s13eir_overload_reduction_percent") >= 50
        reported = await answers(doic, [doic_ecr() for _ in range(20)])
        assert {a.result_code for a in reported} == {2001}  # a DOIC peer sheds by itself
        report = olr(reported[0])
        assert report[627] >= 50 and report[626] == 0 and report[625] == 3  # reduction, HOST_REPORT, validity
        assert reported[0].find(OC_SUPPORTED_FEATURES)

        await wait_reduction(rn, lambda r: r == 0, "the node to recover")
        after = await answers(plain, [M.to_bytes(M.ecr()) for _ in range(100)])
        assert {a.result_code for a in after} == {2001}
        ended = await answers(doic, [doic_ecr()])
        assert olr(ended[0])[625] == 0 and olr(ended[0])[624] > report[624]  # validity 0: the overload ended
        assert await metric(rn, "s13eir_overload_episodes_total") == 1
        for m in (plain, doic):
            m.writer.close()


async def test_redis_lookups_piling_up_are_an_overload(redis_server: RedisServer) -> None:
    """Redis paused (CLIENT PAUSE): confirmations of listed phones wait, the in-flight count
    crosses diameter.overload.in_flight, and the node sheds until Redis answers again."""
    r = seed(redis_server)
    overrides = redis_config(redis_server)
    overrides["diameter"] = {"overload": {**OVERLOAD, "in_flight": 20, "delay_ms": 10_000}}
    overrides["store"]["redis"]["timeout_ms"] = 3000
    async with running_node(config_from_mapping(overrides)) as rn:
        await asyncio.sleep(0.3)
        m = await Mme.open(rn.host, rn.port)
        r.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        paused = [M.to_bytes(M.ecr(BLACK)) for _ in range(60)]
        await m.send(b"".join(paused))
        await wait_reduction(rn, lambda x: x > 0, "the in-flight lookups to count as an overload")
        late = [M.to_bytes(M.ecr(BLACK)) for _ in range(40)]
        got = {a.hbh: a for a in await answers(m, late, also=paused)}
        assert len(got) == 100
        # The paused lookups are answered once Redis is back: BLACKLISTED, none lost.
        assert {got[M.request_ids(q)[1]].equipment_status for q in paused} == {1}
        late_answers = [got[M.request_ids(q)[1]] for q in late]
        assert 3004 in [a.result_code for a in late_answers]
        assert all(a.equipment_status == 1 for a in late_answers if a.result_code != 3004)
        await wait_reduction(rn, lambda x: x == 0, "the node to recover")
        again = await answers(m, [M.to_bytes(M.ecr(BLACK)) for _ in range(20)])
        assert {a.equipment_status for a in again} == {1}
        m.writer.close()


async def test_n5g_eir_sheds_the_same_share_with_503() -> None:
    """One admission control for both interfaces: while the node is overloaded, the AMFs'
    requests get the same share refused, as 503 NF_CONGESTION_RISK with Retry-After
    (TS 29.500), and the rest their verdicts; after the recovery every one is answered."""
    from tests.sbi_helpers import PEI_BLACK, RESOURCE, h2_client

    port = free_port()
    cfg = config_from_mapping(node_config(diameter={"overload": OVERLOAD}, sbi={"address": "127.0.0.1", "port": port}))
    async with running_node(cfg) as rn, h2_client(f"http://127.0.0.1:{port}") as client:
        await hold_the_loop(0.5)
        assert rn.node.overload.reduction >= 50
        got = [await client.get(RESOURCE, params={"pei": PEI_BLACK}) for _ in range(20)]
        refused = [r for r in got if r.status_code == 503]
        assert 0 < len(refused) < 20 and len(refused) == rn.node.overload.refused
        assert refused[0].json()["cause"] == "NF_CONGESTION_RISK" and refused[0].headers["retry-after"] == "1"
        assert all(r.json() == {"status": "BLACKLISTED"} for r in got if r.status_code == 200)
        await wait_reduction(rn, lambda r: r == 0, "the node to recover")
        again = [await client.get(RESOURCE, params={"pei": PEI_BLACK}) for _ in range(10)]
        assert {r.status_code for r in again} == {200}


async def test_a_peer_held_back_by_a_full_receive_window_is_an_overload() -> None:
    """The node stops reading one connection (as a busy loop does) while its MME keeps
    sending: the kernel's receive queue fills, TCP holds the MME back, and the queue on
    its side is out of the node's sight. A full window counts as an overload in itself;
    everything sent is still answered once the node reads again, and the node recovers."""
    cfg = config_from_mapping(node_config(diameter={"overload": {**OVERLOAD, "delay_ms": 10_000}}))
    async with running_node(cfg) as rn:
        m = await Mme.open(rn.host, rn.port)
        await answers(m, [M.to_bytes(M.ecr())])
        (conn,) = rn.node.connections
        assert conn.input_backlog() == (0, False)
        transport = conn._transport
        assert transport is not None
        transport.pause_reading()
        sent = [M.to_bytes(M.ecr()) for _ in range(12_000)]  # some MB: more than the window takes
        ids = {M.request_ids(r)[1] for r in sent}
        m.writer.write(b"".join(sent))  # not drained: the MME's side holds what TCP does not take
        deadline = time.monotonic() + 10
        while not conn.input_backlog()[1]:
            assert time.monotonic() < deadline, f"the receive queue never filled: {conn.input_backlog()}"
            await asyncio.sleep(0.05)
        for _ in range(2):  # sustain_samples: the delay (threshold 10 s) and the backlog stay under
            rn.node.admission.on_lag(0.0)
        assert rn.node.overload.reduction == 20 and "receive window is full" in rn.node.overload.reason
        transport.resume_reading()
        got: dict[int, int] = {}
        while len(got) < len(ids):
            a = await m.read_answer(10)
            if a.is_request and a.command == M.CMD_DWR:
                await m.send(M.dwa_for(a))
                continue
            got[a.hbh] = a.result_code
        assert set(got) == ids and set(got.values()) <= {2001, 3004}
        await wait_reduction(rn, lambda r: r == 0, "the node to recover")
        m.writer.close()
