"""NRF registration (TS 29.510) against a fake NRF: PUT the profile, PATCH heartbeats at the
NRF's heartBeatTimer, PUT again after a 404, DELETE on close; failures are retried with
backoff and never hold up the EIR."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from s13eir.config import SbiConfig
from s13eir.observability.logs import get_logger
from s13eir.sbi.metrics import SbiMetrics
from s13eir.sbi.nrf import NrfClient, nf_instance_id
from tests.sbi_fake_nrf import FakeNrf, Recorded
from tests.sbi_helpers import PEI_BLACK, RESOURCE, h2_client, running_sbi


@pytest.fixture
async def nrf() -> AsyncIterator[FakeNrf]:
    fake = FakeNrf(heartbeat=1)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_register_heartbeat_deregister(nrf: FakeNrf) -> None:
    iid = "0f9c1d0e-7a7e-4c3e-9f55-3f1f2f0c6a01"
    async with running_sbi(nrf={"url": nrf.url, "nf_instance_id": iid}, fqdn="eir.5gc.test") as sbi:
        assert sbi.server.nf_instance_id == iid
        await nrf.wait_for(lambda reqs: "PATCH" in [r.method for r in reqs])
        put, patch = nrf.requests[0], nrf.requests[1]
        assert put.method == "PUT" and put.path == f"/nnrf-nfm/v1/nf-instances/{iid}"
        assert put.headers["content-type"] == "application/json"
        profile = put.json()
        port = sbi.server.bound[1]
        assert profile == {
            "nfInstanceId": iid,
            "nfType": "5G_EIR",
            "nfStatus": "REGISTERED",
            "fqdn": "eir.5gc.test",
            "ipv4Addresses": ["127.0.0.1"],
            "nfServices": [
                {
                    "serviceInstanceId": "n5g-eir-eic-1",
                    "serviceName": "n5g-eir-eic",
                    "versions": [{"apiVersionInUri": "v1", "apiFullVersion": "1.2.0"}],
                    "scheme": "http",
                    "nfServiceStatus": "REGISTERED",
                    "ipEndPoints": [{"transport": "TCP", "port": port, "ipv4Address": "127.0.0.1"}],
                    "fqdn": "eir.5gc.test",
                }
            ],
        }
        assert patch.path == put.path
        assert patch.headers["content-type"] == "application/json-patch+json"
        assert patch.json() == [{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]
        assert sbi.server.metrics.nrf_registered == 1
        # The EIR answers while all this goes on.
        async with h2_client(sbi.url) as client:
            assert (await client.get(RESOURCE, params={"pei": PEI_BLACK})).json() == {"status": "BLACKLISTED"}
    assert nrf.methods()[-1] == "DELETE" and nrf.requests[-1].path == put.path


async def test_heartbeats_follow_the_nrf_timer(nrf: FakeNrf) -> None:
    async with running_sbi(nrf={"url": nrf.url, "heartbeat_s": 30}):
        await nrf.wait_for(lambda reqs: [r.method for r in reqs].count("PATCH") >= 2, timeout=5)
    assert nrf.requests[0].json()["heartBeatTimer"] == 30  # proposed; the NRF answered 1 and won


async def test_404_on_heartbeat_registers_again(nrf: FakeNrf) -> None:
    forgot = {"done": False}

    def reply(req: Recorded) -> tuple[int, dict[str, str], bytes]:
        if req.method == "PATCH" and not forgot["done"]:
            forgot["done"] = True
            return 404, {"content-type": "application/problem+json"}, b'{"status":404}'
        return nrf.default_reply(req)

    nrf.reply = reply
    async with running_sbi(nrf={"url": nrf.url}):
        await nrf.wait_for(lambda reqs: [r.method for r in reqs][:4] == ["PUT", "PATCH", "PUT", "PATCH"], timeout=6)


async def test_failures_are_retried_with_backoff(nrf: FakeNrf) -> None:
    answers = iter([500, 503, 201])

    def reply(req: Recorded) -> tuple[int, dict[str, str], bytes]:
        if req.method == "PUT":
            code = next(answers, 201)
            if code != 201:
                return code, {}, b""
        return nrf.default_reply(req)

    nrf.reply = reply
    cfg = msgspec.convert({"port": 8080, "nrf": {"url": nrf.url, "retry_max_s": 0.2}}, SbiConfig)
    metrics = SbiMetrics()
    client = NrfClient(cfg, nf_instance_id(cfg, "eir"), 8080, metrics, get_logger("test"), retry_min_s=0.05)
    start = time.monotonic()
    client.start()
    async with asyncio.timeout(5):
        await client.registered.wait()
    assert nrf.methods()[:3] == ["PUT", "PUT", "PUT"]
    assert time.monotonic() - start < 2
    assert metrics.nrf_requests[("register", "500")] == 1 and metrics.nrf_requests[("register", "201")] == 1
    await client.close()
    assert nrf.methods()[-1] == "DELETE" and metrics.nrf_registered == 0


async def test_an_nrf_that_is_down_or_silent_never_blocks_the_eir() -> None:
    # A silent NRF: accepts connections and never answers.
    silent = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        for url in (f"http://127.0.0.1:{port}", "http://127.0.0.1:9"):  # silent, then refused
            started = time.monotonic()
            async with running_sbi(nrf={"url": url, "timeout_s": 0.3}) as sbi:
                assert time.monotonic() - started < 0.5  # start_sbi does not wait for the NRF
                async with h2_client(sbi.url) as client:
                    for _ in range(3):
                        r = await client.get(RESOURCE, params={"pei": PEI_BLACK})
                        assert r.json() == {"status": "BLACKLISTED"}
                await asyncio.sleep(0.4)
                assert sbi.server.metrics.nrf_requests.get(("register", "error"), 0) >= 1
                assert sbi.server.metrics.nrf_registered == 0
                closing = time.monotonic()
            assert time.monotonic() - closing < 1.5  # close() is bounded too
    finally:
        silent.close()


def test_nf_instance_id_is_stable_per_configuration() -> None:
    a = msgspec.convert({"address": "10.0.0.1", "port": 8080}, SbiConfig)
    b = msgspec.convert({"address": "10.0.0.2", "port": 8080}, SbiConfig)
    assert nf_instance_id(a, "eir1") == nf_instance_id(a, "eir1")
    assert len({nf_instance_id(a, "eir1"), nf_instance_id(a, "eir2"), nf_instance_id(b, "eir1")}) == 3
    assert uuid.UUID(nf_instance_id(a, None)).version == 5
    fixed = msgspec.convert({"nrf": {"nf_instance_id": "0F9C1D0E-7A7E-4C3E-9F55-3F1F2F0C6A01"}}, SbiConfig)
    assert nf_instance_id(fixed, "eir1") == "0f9c1d0e-7a7e-4c3e-9f55-3f1f2f0c6a01"
