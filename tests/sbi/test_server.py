"""N5g-eir over real HTTP/2: every answer the API gives, h2c and TLS, many streams at once.

Every response is checked against src/s13eir/sbi/openapi.yaml (status listed, content type
declared, body valid against the schema, required headers present).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest

from s13eir.config import PolicyConfig
from s13eir.decision.model import UnknownPolicy
from s13eir.decision.policy import MalformedImeiPolicy
from s13eir.observability.metrics import render
from tests.sbi_helpers import (
    IMSI_EXCEPTION,
    PEI_BLACK,
    PEI_GREY,
    PEI_RANGE_GREY,
    PEI_TAC_BLACK,
    PEI_UNLISTED,
    RESOURCE,
    check_response,
    h2_client,
    make_pki,
    problem,
    running_sbi,
)


async def get(client: httpx.AsyncClient, query: str = "", **kw: object) -> httpx.Response:
    response = await client.get(RESOURCE + (f"?{query}" if query else ""), **kw)  # type: ignore[arg-type]
    assert response.http_version == "HTTP/2"
    check_response(response)
    return response


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"pei={PEI_BLACK}", "BLACKLISTED"),
        (f"pei={PEI_BLACK}&supi=imsi-{IMSI_EXCEPTION}", "WHITELISTED"),  # the exception pair
        (f"pei={PEI_BLACK}&supi=imsi-001010000000002", "BLACKLISTED"),  # another subscriber
        (f"pei={PEI_BLACK}&supi=nai-{IMSI_EXCEPTION}@example.org", "BLACKLISTED"),  # not an IMSI SUPI
        ("pei=imeisv-3520990017614899", "BLACKLISTED"),  # IMEISV: same 14-digit key
        (f"pei={PEI_GREY}&gpsi=msisdn-15550100001", "GREYLISTED"),
        (f"pei={PEI_RANGE_GREY}", "GREYLISTED"),
        (f"pei={PEI_TAC_BLACK}", "BLACKLISTED"),
        ("pei=imei-860000120001275", "WHITELISTED"),  # white IMEI inside a black TAC
        (f"pei={PEI_UNLISTED}&supported-features=0", "WHITELISTED"),
        ("pei=mac-00-11-22-33-44-55", "WHITELISTED"),  # wireline PEI: unknown equipment, permissive
        ("pei=imei%2D352099001761481", "BLACKLISTED"),  # percent-encoded
    ],
)
async def test_verdicts_over_h2c(query: str, status: str) -> None:
    async with running_sbi() as sbi, h2_client(sbi.url) as client:
        response = await get(client, query)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"status": status}


async def test_restrictive_mode_answers_404_equipment_unknown() -> None:
    policy = PolicyConfig(unknown_imei=UnknownPolicy.UNKNOWN)
    async with running_sbi(policy=policy) as sbi, h2_client(sbi.url) as client:
        for pei in (PEI_UNLISTED, "pei=eui-00-11-22-33-44-55-66-77"[4:]):
            body = problem(await get(client, f"pei={pei}"))
            assert body["status"] == 404 and body["cause"] == "ERROR_EQUIPMENT_UNKNOWN"
        assert (await get(client, f"pei={PEI_BLACK}")).json() == {"status": "BLACKLISTED"}
    assert [o.http_status for o in sbi.outcomes] == [404, 404, 200]
    assert sbi.outcomes[0].verdict is not None and sbi.outcomes[0].verdict.reason.rule.value == "policy"


@pytest.mark.parametrize(
    ("query", "cause", "param"),
    [
        ("", "MANDATORY_QUERY_PARAM_MISSING", "query pei"),
        ("supi=imsi-001010000000001", "MANDATORY_QUERY_PARAM_MISSING", "query pei"),
        ("pei=", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        ("pei=imei-3520990017614", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),  # malformed IMEI: reject
        ("pei=imeisv-35209900176148", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        ("pei=imei-35209900176148X", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        ("pei=hello", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        ("pei=mac-00-11-22", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        (f"pei={PEI_BLACK}&pei={PEI_GREY}", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),
        ("pei=%FF%FE", "MANDATORY_QUERY_PARAM_INCORRECT", "query pei"),  # not UTF-8
        (f"pei={PEI_BLACK}&supi=", "OPTIONAL_QUERY_PARAM_INCORRECT", "query supi"),
        (f"pei={PEI_BLACK}&gpsi=", "OPTIONAL_QUERY_PARAM_INCORRECT", "query gpsi"),
        (f"pei={PEI_BLACK}&supported-features=xyz", "OPTIONAL_QUERY_PARAM_INCORRECT", "query supported-features"),
        (f"pei={PEI_BLACK}&imei=1", "INVALID_QUERY_PARAM", "query imei"),
    ],
)
async def test_query_errors_are_400_problem_details(query: str, cause: str, param: str) -> None:
    async with running_sbi() as sbi, h2_client(sbi.url) as client:
        body = problem(await get(client, query))
        assert body["status"] == 400 and body["cause"] == cause
        assert [p["param"] for p in body["invalidParams"]] == [param]


@pytest.mark.parametrize(
    ("policy", "status"), [("blacklisted", "BLACKLISTED"), ("greylisted", "GREYLISTED"), ("whitelisted", "WHITELISTED")]
)
async def test_malformed_imei_follows_the_s13_policy(policy: str, status: str) -> None:
    async with (
        running_sbi(policy=PolicyConfig(malformed_imei=MalformedImeiPolicy(policy))) as sbi,
        h2_client(sbi.url) as client,
    ):
        assert (await get(client, "pei=imei-3520990017614")).json() == {"status": status}
        assert problem(await get(client, "pei=hello"))["cause"] == "MANDATORY_QUERY_PARAM_INCORRECT"
    verdict = sbi.outcomes[0].verdict
    assert verdict is not None and verdict.reason.rule.value == "malformed"


async def test_http_level_errors() -> None:
    async with running_sbi(max_uri_length=512, max_header_list_size=4096) as sbi, h2_client(sbi.url) as client:
        r = await client.post(RESOURCE + f"?pei={PEI_BLACK}")
        check_response(r)
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        r = await client.delete(RESOURCE)
        assert r.status_code == 405
        r = await get(client, f"pei={PEI_BLACK}", headers={"accept": "text/html"})
        assert r.status_code == 406
        r = await get(client, f"pei={PEI_BLACK}", headers={"accept": "application/json;q=0, */*"})
        assert r.status_code == 406
        r = await get(client, f"pei={PEI_BLACK}", headers={"accept": "application/*;q=0.5, text/plain"})
        assert r.status_code == 200
        r = await get(client, f"pei={PEI_BLACK}&gpsi=" + "x" * 600)
        assert r.status_code == 414
        r = await get(client, f"pei={PEI_BLACK}", headers={"x-filler": "y" * 5000})
        assert r.status_code == 431
        for path in ("/", "/n5g-eir-eic/v1/other", "/n5g-eir-eic/v1/equipment-status/"):
            r = await client.get(path)
            check_response(r)
            assert r.status_code == 404, path
        assert problem(await client.get("/n5g-eir-eic/v1/x"))["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"
        for path in ("/n5g-eir-eic/v2/equipment-status", "/nudm-sdm/v2/imsi-001010000000001"):
            r = await client.get(path)
            check_response(r)
            assert problem(r)["cause"] == "INVALID_API"
        # The connection survived every error answer.
        assert (await get(client, f"pei={PEI_BLACK}")).json() == {"status": "BLACKLISTED"}
    assert sbi.server.metrics.connections_total == 1


async def test_metrics_join_the_node_registry() -> None:
    async with running_sbi() as sbi, h2_client(sbi.url) as client:
        await get(client, f"pei={PEI_BLACK}")
        await get(client, f"pei={PEI_BLACK}")
        await get(client, "")
        text = render(sbi.metrics).decode()
    assert 's13eir_sbi_answers_total{cause="",equipment_status="blacklisted",http_status="200"} 2.0' in text
    assert (
        's13eir_sbi_answers_total{cause="MANDATORY_QUERY_PARAM_MISSING",equipment_status="none",http_status="400"} 1.0'
        in text
    )
    assert "s13eir_sbi_connections_total 1.0" in text
    assert "s13eir_answers_total" in text  # the node's own families are still there


async def test_content_on_a_get() -> None:
    async with running_sbi() as sbi, h2_client(sbi.url) as client:
        url = RESOURCE + f"?pei={PEI_BLACK}"
        r = await client.request("GET", url, content=b"<x/>", headers={"content-type": "application/xml"})
        check_response(r)
        assert r.status_code == 415
        r = await client.request("GET", url, content=b"{}", headers={"content-type": "application/json"})
        check_response(r)
        assert problem(r)["cause"] == "INVALID_MSG_FORMAT"
        r = await client.request("GET", url, content=b"", headers={"content-type": "application/xml"})
        assert r.status_code == 200  # no content, whatever the header says
        assert (await get(client, f"pei={PEI_BLACK}")).status_code == 200


async def test_check_failure_is_500_and_the_server_goes_on() -> None:
    calls = 0

    def flaky(imei14: str, imsi: str | None, sv: str | None = None) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store down")

    async with running_sbi(check=flaky) as sbi, h2_client(sbi.url) as client:
        for _ in range(2):
            body = problem(await get(client, f"pei={PEI_BLACK}"))
            assert body["status"] == 500 and body["cause"] == "SYSTEM_FAILURE"
    assert "store down" in sbi.outcomes[0].detail
    assert sbi.outcomes[1].detail == "no verdict available"


async def test_100_concurrent_streams_on_one_connection() -> None:
    peis = [PEI_BLACK, PEI_GREY, PEI_UNLISTED, PEI_TAC_BLACK] * 25
    expected = {PEI_BLACK: "BLACKLISTED", PEI_GREY: "GREYLISTED", PEI_UNLISTED: "WHITELISTED",
                PEI_TAC_BLACK: "BLACKLISTED"}  # fmt: skip
    async with running_sbi(max_concurrent_streams=128) as sbi, h2_client(sbi.url) as client:
        responses = await asyncio.gather(*(client.get(RESOURCE, params={"pei": p}) for p in peis))
        assert [r.json()["status"] for r in responses] == [expected[p] for p in peis]
        assert sbi.server.metrics.connections_total == 1
        assert sum(sbi.server.metrics.answers.values()) == 100


async def test_tls_with_alpn_h2(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with running_sbi(tls=True, certfile=str(pki.cert), keyfile=str(pki.key)) as sbi:
        assert sbi.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        async with h2_client(sbi.url, verify=ctx) as client:
            r = await get(client, f"pei={PEI_BLACK}")
            assert r.json() == {"status": "BLACKLISTED"}
            assert problem(await get(client, ""))["cause"] == "MANDATORY_QUERY_PARAM_MISSING"
        # ALPN really selected h2 (not a fallback): ask with the ssl module directly.
        _, writer = await asyncio.open_connection(*sbi.server.bound, ssl=_alpn_ctx(pki.ca, ["h2", "http/1.1"]))
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.close()


async def test_tls_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with running_sbi(tls=True, certfile=str(pki.cert), keyfile=str(pki.key), cafile=str(pki.ca)) as sbi:
        with_cert = ssl.create_default_context(cafile=str(pki.ca))
        with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        async with h2_client(sbi.url, verify=with_cert) as client:
            assert (await get(client, f"pei={PEI_GREY}")).json() == {"status": "GREYLISTED"}
        without = ssl.create_default_context(cafile=str(pki.ca))
        async with h2_client(sbi.url, verify=without) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(RESOURCE, params={"pei": PEI_GREY})
        # ... and the server still serves a good client afterwards.
        async with h2_client(sbi.url, verify=with_cert) as client:
            assert (await get(client, f"pei={PEI_BLACK}")).status_code == 200


def _alpn_ctx(ca: Path, protocols: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(protocols)
    return ctx
