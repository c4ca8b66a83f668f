"""Detection in a running node, over real TCP: every answered ECR (the fast path's
whitelisted ones too) reaches the rules off the answer path, findings become cases on the
metrics port and metrics per rule, and the answers are the ones a node without detection
gives, byte for byte."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import MME_REALM, RunningNode, node_config, running_node
from tests.mme import Mme

PEERS = [
    {"origin_host": "mme1.s13eir.test", "origin_realm": MME_REALM,
     "location": {"region": "Madrid", "lat": 40.4168, "lon": -3.7038}},
    {"origin_host": "mme2.s13eir.test", "origin_realm": MME_REALM,
     "location": {"region": "Barcelona", "lat": 41.3874, "lon": 2.1686}},
]  # fmt: skip
CLONED = "35450712345675"  # on no list: answered by the fast path
TEST_TAC = "00101500000017"


def config(detection: bool, worker: bool = True, **logging: Any) -> Any:
    cfg = node_config(peers={"list": PEERS}, detection={"enabled": detection, "worker": worker})
    if logging:
        cfg["logging"] = {"level": "info", **logging}
    return config_from_mapping(cfg)


async def http_get(rn: RunningNode, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rn.http_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await asyncio.to_thread(get)


def requests() -> list[tuple[str, bytes]]:
    """The owner in Madrid, a clone in Barcelona at once, and a test TAC: (MME, ECR)."""
    return [(host, M.to_bytes(M.ecr(imei, imsi, origin_host=host)))
            for host, imei, imsi in [("mme1.s13eir.test", CLONED, "214010000000001"),
                                     ("mme2.s13eir.test", CLONED, "214010000000002"),
                                     ("mme1.s13eir.test", TEST_TAC, "214010000000003")]]  # fmt: skip


async def answers(rn: RunningNode, reqs: list[tuple[str, bytes]] | None = None) -> list[bytes]:
    """Each request on its MME's connection; the raw ECAs."""
    out = []
    for host, req in reqs or requests():
        m = await Mme.open(rn.host, rn.port, origin_host=host)
        try:
            ans = await m.request(req)
            assert ans.result_code == 2001 and ans.equipment_status == M.WHITELISTED
            out.append(ans.raw)
        finally:
            await m.close()
    return out


async def wait_cases(rn: RunningNode, n: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status, body = await http_get(rn, "/cases")
        assert status == 200
        cases = {c["imei"]: c for c in json.loads(body)["cases"]}
        if len(cases) >= n or time.monotonic() > deadline:
            return cases
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("worker", [True, False], ids=["worker", "node-loop"])
async def test_a_clone_across_two_mmes_becomes_a_case(worker: bool) -> None:
    async with running_node(config(True, worker)) as rn:
        assert rn.node.app.recorder is not None
        fast = rn.node.app.whitelisted_fast
        await answers(rn)
        assert rn.node.app.whitelisted_fast > fast  # the clone's checks went by the fast path
        cases = await wait_cases(rn, 2)
        assert set(cases) == {CLONED, TEST_TAC}
        clone = cases[CLONED]
        assert clone["rules"] == {"time_distance": 1} and clone["action"] == "observe"
        assert clone["imsis"] == ["214010000000001", "214010000000002"]
        assert [e["peer"] for e in clone["evidence"]] == ["mme1.s13eir.test", "mme2.s13eir.test"]
        assert cases[TEST_TAC]["rules"] == {"invalid_identifier": 1}
        status, one = await http_get(rn, f"/cases/{CLONED}")
        assert status == 200 and json.loads(one)["imei"] == CLONED
        assert (await http_get(rn, "/cases/35209900176148"))[0] == 404
        metrics = (await http_get(rn, "/metrics"))[1].decode()
        assert 's13eir_detection_findings_total{rule="time_distance"} 1.0' in metrics
        assert "s13eir_detection_sightings_total 3.0" in metrics
        assert 's13eir_detection_dropped_total{reason="queue"} 0.0' in metrics
        assert 's13eir_detection_dropped_total{reason="store"} 0.0' in metrics


async def test_the_answers_are_those_of_a_node_without_detection() -> None:
    reqs = requests()
    async with running_node(config(True)) as on:
        with_detection = await answers(on, reqs)
    async with running_node(config(False)) as off:
        without = await answers(off, reqs)
        assert off.node.detection is None and (await http_get(off, "/cases"))[0] == 404
    assert with_detection == without


async def test_cases_mask_the_imsis_as_the_logs_do() -> None:
    async with running_node(config(True, mask_imsi=True)) as rn:
        await answers(rn)
        cases = await wait_cases(rn, 2)
        text = json.dumps(cases)
        assert "214010000000001" not in text and "214010000000002" not in text
        assert len(cases[CLONED]["imsis"]) == 2


async def test_a_dead_worker_is_shown_restarted_and_detection_goes_on() -> None:
    async with running_node(config(True)) as rn:
        det = rn.node.detection
        assert det is not None
        await answers(rn, requests()[:2])
        await wait_cases(rn, 1)
        first = det.worker
        assert first is not None and first.returncode is None
        first.kill()
        deadline = time.monotonic() + 10
        while "detection" not in rn.node.supervisor.describe_down():  # logged, counted, on /readyz
            assert time.monotonic() < deadline, "the worker's death went unseen"
            await asyncio.sleep(0.02)
        metrics = (await http_get(rn, "/metrics"))[1].decode()
        assert 's13eir_task_failures_total{task="detection"} 1.0' in metrics
        while det.worker is first or det.worker is None:  # a new worker after the backoff
            assert time.monotonic() < deadline, "no new worker"
            await asyncio.sleep(0.05)
        await answers(rn, requests()[2:])  # the test TAC, to the new worker
        assert TEST_TAC in await wait_cases(rn, 2)
        assert first.returncode is not None
        metrics = (await http_get(rn, "/metrics"))[1].decode()
        assert "s13eir_detection_sightings_total 3.0" in metrics  # counted on from the first worker's 2


async def test_n5g_eir_sightings_name_the_amf_by_its_user_agent() -> None:
    """TS 29.500 §5.2.2.2: the AMF names itself in User-Agent; a peers.list entry of that
    name places it, so a clone seen by AMFs in two cities is a time/distance conflict."""
    from tests.sbi_helpers import RESOURCE, h2_client

    amfs = [{"origin_host": "amf-madrid.5gc.test", "origin_realm": MME_REALM,
             "location": {"region": "Madrid", "lat": 40.4168, "lon": -3.7038}},
            {"origin_host": "amf-barcelona.5gc.test", "origin_realm": MME_REALM,
             "location": {"region": "Barcelona", "lat": 41.3874, "lon": 2.1686}}]  # fmt: skip
    cfg = node_config(peers={"list": PEERS + amfs}, detection={"enabled": True},
                      sbi={"address": "127.0.0.1", "port": 0})  # fmt: skip
    async with running_node(config_from_mapping(cfg)) as rn:
        port = next(p for t, _, p in rn.node.bound if t == "sbi")
        async with h2_client(f"http://127.0.0.1:{port}") as c:
            for amf, imsi in (
                ("AMF-madrid.5gc.test", "214010000000001"),
                ("AMF-barcelona.5gc.test", "214010000000002"),
            ):
                r = await c.get(RESOURCE, params={"pei": f"imei-{CLONED}0", "supi": f"imsi-{imsi}"},
                                headers={"user-agent": amf})  # fmt: skip
                assert r.status_code == 200
        case = (await wait_cases(rn, 1))[CLONED]
        assert case["rules"] == {"time_distance": 1}
        assert sorted(e["peer"] for e in case["evidence"]) == ["amf-barcelona.5gc.test", "amf-madrid.5gc.test"]
        assert {e["rat"] for e in case["evidence"]} == {"5g"}
