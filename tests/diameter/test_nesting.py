"""Hostile shapes of input. Grouped AVPs nested past diameter.max_avp_depth: refused
with 5004 and Failed-AVP, cheaply, before any authentication, and the server goes on
serving (RFC 6733 §7.5). Inner AVPs without their padding: echoed well-formed. A bug
while handling a message: logged as JSON, counted, one connection closed."""

from __future__ import annotations

import pytest
import structlog

from s13eir.diameter.validate import MAX_AVP_DEPTH
from tests import mme as M
from tests.conftest import RunningNode
from tests.mme import Mme
from tests.s13.test_error_paths import assert_serves, check_eca

pytestmark = pytest.mark.timeout(60)


def nested(code: int, depth: int, leaf: bytes, every_level: bytes = b"") -> bytes:
    """``depth`` levels of grouped AVP ``code`` around ``leaf``, each level holding ``every_level`` too."""
    out = leaf
    for _ in range(depth):
        out = M.grouped(code, every_level + out)
    return out


def depth_of(avp: M.RawAvp, code: int) -> int:
    n = 0
    while avp.code == code:
        n += 1
        children = avp.children()
        if not children:
            break
        avp = children[0]
    return n


@pytest.mark.parametrize("depth", [600, MAX_AVP_DEPTH + 1])
async def test_deep_proxy_info_in_an_ecr_gets_5004(eir: RunningNode, depth: int) -> None:
    leaf = M.avp(M.AVP_PROXY_HOST, b"dra.s13eir.test") + M.avp(M.AVP_PROXY_STATE, b"s")
    m = await Mme.open(eir.host, eir.port)
    try:
        req = M.with_avps(M.to_bytes(M.ecr(M.IMEI_BLACK)), nested(M.AVP_PROXY_INFO, depth, leaf))
        ans = await m.request(req)
        check_eca(ans, req, 5004)
        failed = ans.failed_avps
        assert len(failed) == 1 and failed[0].code == M.AVP_PROXY_INFO
        assert depth_of(failed[0], M.AVP_PROXY_INFO) == MAX_AVP_DEPTH + 1  # the parents, then the refused one
        await assert_serves(m)
    finally:
        await m.close()


async def test_proxy_info_nested_to_the_limit_is_served(eir: RunningNode) -> None:
    leaf = M.avp(M.AVP_PROXY_HOST, b"dra.s13eir.test") + M.avp(M.AVP_PROXY_STATE, b"s")
    m = await Mme.open(eir.host, eir.port)
    try:
        deep = nested(M.AVP_PROXY_INFO, MAX_AVP_DEPTH, b"", every_level=leaf)
        req = M.with_avps(M.to_bytes(M.ecr(M.IMEI_BLACK)), deep)
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.BLACKLISTED
    finally:
        await m.close()


async def test_deep_failed_avp_in_a_cer_from_an_unknown_host_is_answered_and_closed(eir: RunningNode) -> None:
    cer = M.to_bytes(M.cer("stranger.s13eir.test"))
    deep = nested(M.AVP_FAILED_AVP, 600, M.u32(M.AVP_RESULT_CODE, 2001))
    m = await Mme.connect(eir.host, eir.port)
    try:
        await m.send(M.with_avps(cer, deep))
        answers = await m.assert_closed()
    finally:
        await m.close()
    assert len(answers) == 1 and answers[0].result_code == 5004
    assert answers[0].msg.result_code == 5004  # python-diameter decodes it
    # The node still admits its MMEs.
    m2 = await Mme.open(eir.host, eir.port)
    try:
        await assert_serves(m2)
    finally:
        await m2.close()


async def test_an_internal_error_is_a_json_line_a_count_and_one_closed_connection(eir: RunningNode) -> None:
    """A bug while handling a request (injected here) must not reach asyncio's raw
    traceback: one connection_failed line with the traceback, a count, and that
    connection closed; the node and its other connections go on."""
    lists = eir.node.app.lists

    class Broken:
        def facts(self, imei14: str, imsi: str | None) -> object:
            raise RuntimeError("injected")

    other = await Mme.open(eir.host, eir.port, origin_host="mme2.s13eir.test")
    m = await Mme.open(eir.host, eir.port)
    try:
        with structlog.testing.capture_logs() as logs:
            eir.node.app.lists = Broken()  # type: ignore[assignment]
            await m.send(M.to_bytes(M.ecr(M.IMEI_BLACK)))
            await m.assert_closed()
            eir.node.app.lists = lists
        failed = [e for e in logs if e["event"] == "connection_failed"]
        assert len(failed) == 1 and isinstance(failed[0]["exc_info"], RuntimeError)
        assert eir.node.metrics.protocol_errors.get(5012) == 1
        await assert_serves(other)
    finally:
        eir.node.app.lists = lists
        await m.close()
        await other.close()


@pytest.mark.parametrize("state", [b"s", b"st", b"sta", b"stat"])
async def test_proxy_info_whose_last_inner_avp_lacks_padding_is_echoed_padded(eir: RunningNode, state: bytes) -> None:
    host = M.avp(M.AVP_PROXY_HOST, b"dra.s13eir.test")
    raw_state = M.avp(M.AVP_PROXY_STATE, state)[: 8 + len(state)]  # the AVP without its padding
    inner = host + raw_state
    head = (M.AVP_PROXY_INFO).to_bytes(4, "big") + bytes([0x40]) + (8 + len(inner)).to_bytes(3, "big")
    unpadded = head + inner + b"\0" * (-(8 + len(inner)) % 4)  # the group padded, its last child not
    m = await Mme.open(eir.host, eir.port)
    try:
        for imei in (M.IMEI_BLACK, M.IMEI_UNLISTED):  # the full path and the fast path
            req = M.with_avps(M.to_bytes(M.ecr(imei)), unpadded)
            ans = await m.request(req)
            check_eca(ans, req, 2001)  # python-diameter decodes the answer
            echoed = ans.find(M.AVP_PROXY_INFO)
            assert len(echoed) == 1
            kids = echoed[0].children()
            want = [(M.AVP_PROXY_HOST, b"dra.s13eir.test"), (M.AVP_PROXY_STATE, state)]
            assert [(k.code, k.data) for k in kids] == want
            pi = ans.msg.proxy_info
            pi = pi[0] if isinstance(pi, list) else pi
            assert pi.proxy_state == state
    finally:
        await m.close()
