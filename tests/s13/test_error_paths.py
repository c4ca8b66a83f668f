"""Every error path of the base protocol and of S13, with a raw MME.

Most cases talk to the node's peer in memory (``tests/virtual_eir.py``: the peer a node
builds, behind asyncio streams); the ones about the socket (segmentation, a close, the
timers, a second connection, stopping the node) run over real TCP (``tcp_eir``,
``eir_with(tcp=True)``). ``test_error_table.py`` holds the same rules as a golden table.

Each test checks the answer (Result-Code or Experimental-Result, the E-bit,
Failed-AVP, the echoed identifiers, Session-Id, Proxy-Info, Auth-Session-State in
ECAs) and what happens to the connection afterwards: still answering a good ECR,
or closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    DeviceWatchdogAnswer,
    DisconnectPeerAnswer,
    MeIdentityCheckAnswer,
)

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import EIR_HOST, EIR_REALM, MME_HOST, MME_REALM, RunningNode, node_config, running_node
from tests.mme import Answer, Mme
from tests.virtual_eir import VirtualEir

pytestmark = pytest.mark.timeout(90)


Eir = RunningNode | VirtualEir


@pytest.fixture
def eir() -> VirtualEir:
    """The node's peer in memory (most cases here are about bytes, not sockets)."""
    return VirtualEir(config_from_mapping(node_config()))


@pytest.fixture
async def tcp_eir() -> AsyncIterator[RunningNode]:
    """A running node over TCP, for the cases that are about the socket: segmentation,
    closing, timers, a second connection, stopping the node."""
    async with running_node(config_from_mapping(node_config())) as rn:
        yield rn


@contextlib.asynccontextmanager
async def eir_with(*, tcp: bool = False, **overrides: Any) -> AsyncIterator[Eir]:
    config = config_from_mapping(node_config(**overrides))
    if not tcp:
        yield VirtualEir(config)
        return
    async with running_node(config) as rn:
        yield rn


@contextlib.asynccontextmanager
async def mme_on(eir: Eir, **cer_kw: Any) -> AsyncIterator[Mme]:
    m = await Mme.open_on(eir, **cer_kw)
    try:
        yield m
    finally:
        await m.close()


def check_eca(
    ans: Answer, request: bytes, result_code: int | None, *, e_bit: bool | None = None, session_id: bool = True
) -> None:
    """What every ECA must look like (TS 29.272 §7.2.20, RFC 6733 §6.2, §7)."""
    if e_bit is None and result_code is not None:
        e_bit = 3000 <= result_code < 4000
    M.check_answer_header(ans, request, e_bit=e_bit)
    assert ans.command == M.CMD_ECR
    assert isinstance(ans.msg, MeIdentityCheckAnswer)
    assert ans.result_code == result_code, f"expected Result-Code {result_code}: {ans}"
    assert ans.msg.result_code == result_code  # python-diameter agrees
    # Auth-Session-State in every ECA, 5xxx ones included (it is { } in the ECA format). A 3xxx
    # answer (E-bit) is RFC 6733 §7.2's generic answer-message instead, which neither requires nor
    # forbids it; since 50205e1 the server leaves it out there for Erlang/OTP diameter, so either is
    # accepted for 3xxx (the brief asked for it in every ECA: see the report).
    ass = ans.find(M.AVP_AUTH_SESSION_STATE)
    if not ans.e_bit:
        assert len(ass) == 1, f"Auth-Session-State missing or repeated in {ans}"
    assert len(ass) <= 1, f"Auth-Session-State repeated in {ans}"
    if ass:
        assert ass[0].u32() == 1
    assert ans.one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()
    assert ans.one(M.AVP_ORIGIN_REALM).data == EIR_REALM.encode()
    # Session-Id echoed, and first (RFC 6733 §6.2, §8.8).
    sent = M.lenient_avps(request)
    sid = [a for a in sent if a.code == M.AVP_SESSION_ID and a.vendor == 0]
    if sid and session_id:
        assert ans.avps[0].code == M.AVP_SESSION_ID, f"Session-Id must come first: {ans}"
        assert ans.avps[0].data == sid[0].data
    # TS 29.272 §7.2.1: never Vendor-Specific-Application-Id in an ECA.
    assert not ans.find(M.AVP_VSAI), "Vendor-Specific-Application-Id in an ECA"
    # Equipment-Status only with 2001.
    if result_code != 2001:
        assert ans.equipment_status is None, f"Equipment-Status in a non-2001 ECA: {ans}"
    if result_code is not None and result_code != 2001:
        assert ans.experimental_result is None


def check_failed(ans: Answer, code: int, vendor: int = 0, *, inside: tuple[int, int] | None = None) -> M.RawAvp:
    """Failed-AVP holds exactly one AVP ``code``/``vendor`` (wrapped in ``inside`` when nested)."""
    failed = ans.failed_avps
    assert len(failed) == 1, f"Failed-AVP should hold one AVP, holds {[(a.code, a.vendor) for a in failed]}"
    top = failed[0]
    # python-diameter reads the same thing.
    pd = ans.msg.failed_avp
    pd = pd[0] if isinstance(pd, list) else pd
    assert [(a.code, a.vendor_id) for a in pd.additional_avps] == [(top.code, top.vendor)]
    if inside is not None:
        assert (top.code, top.vendor) == inside, f"Failed-AVP should wrap in {inside}, has {(top.code, top.vendor)}"
        children = top.children()
        assert len(children) == 1, f"the wrapper should hold only the offending AVP, holds {children}"
        top = children[0]
    assert (top.code, top.vendor) == (code, vendor), f"Failed-AVP holds {(top.code, top.vendor)}"
    assert bool(top.flags & M.AVP_V) == bool(vendor)
    return top


async def assert_serves(m: Mme, imei: str | None = None, status: int | None = None) -> None:
    """The connection still works: good ECRs get the right verdicts (by default one
    blacklisted, answered by the full path, and one whitelisted, by the fast path)."""
    cases = [(M.IMEI_BLACK, M.BLACKLISTED), (M.IMEI_UNLISTED, M.WHITELISTED)] if imei is None else [(imei, status)]
    for imei_, status_ in cases:
        req = M.to_bytes(M.ecr(imei_))
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == status_
        assert ans.msg.equipment_status == status_


# -- framing ------------------------------------------------------------------------


async def test_ecr_written_one_byte_at_a_time(tcp_eir: RunningNode) -> None:
    async with mme_on(tcp_eir) as m:
        req = M.to_bytes(M.ecr(M.IMEI_GREY))
        await m.send_slowly(req, chunk=1, pause=0.001)
        ans = await m.read_answer()
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.GREYLISTED
        await assert_serves(m)


async def test_several_ecrs_in_one_write(eir: Eir) -> None:
    cases = [(M.IMEI_BLACK, M.BLACKLISTED), (M.IMEI_GREY, M.GREYLISTED), (M.IMEI_UNLISTED, M.WHITELISTED)] * 3
    async with mme_on(eir) as m:
        reqs = [M.to_bytes(M.ecr(imei)) for imei, _ in cases]
        await m.send(b"".join(reqs))
        for req, (_, status) in zip(reqs, cases, strict=True):
            ans = await m.read_answer()
            check_eca(ans, req, 2001)
            assert ans.equipment_status == status
        await assert_serves(m)


async def test_messages_straddling_writes(tcp_eir: RunningNode) -> None:
    """One write ends in the middle of the second message's header, the next one finishes it."""
    async with mme_on(tcp_eir) as m:
        a, b, c = (M.to_bytes(M.ecr(imei)) for imei in (M.IMEI_BLACK, M.IMEI_GREY, M.IMEI_UNLISTED))
        stream = a + b + c
        cuts = [0, len(a) + 3, len(a) + 13, len(a) + len(b) + 30, len(stream)]
        for lo, hi in itertools.pairwise(cuts):
            await m.send(stream[lo:hi])
            await asyncio.sleep(0.02)
        statuses = [(await m.read_answer()).equipment_status for _ in range(3)]
        assert statuses == [M.BLACKLISTED, M.GREYLISTED, M.WHITELISTED]


@pytest.mark.parametrize("slow", [False, True], ids=["one-write", "byte-by-byte"])
async def test_version_2_gets_5011_and_close(tcp_eir: RunningNode, slow: bool) -> None:
    async with mme_on(tcp_eir) as m:
        good = M.to_bytes(M.ecr())
        req = bytes([2]) + good[1:]
        if slow:
            await m.send_slowly(req[:20])
        else:
            await m.send(req)
        frames = await m.assert_closed(5)
        assert len(frames) == 1, f"expected one 5011 answer before the close, got {frames}"
        ans = frames[0]
        M.check_answer_header(ans, req, e_bit=False)
        assert ans.result_code == 5011
        assert ans.version == 1
        assert ans.one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()


@pytest.mark.parametrize(
    "length",
    [pytest.param(-2, id="not-multiple-of-4"), pytest.param(12, id="shorter-than-header"),
     pytest.param(0, id="zero")],
)  # fmt: skip
async def test_unframeable_length_gets_5015_and_close(eir: Eir, length: int) -> None:
    async with mme_on(eir) as m:
        good = M.to_bytes(M.ecr())
        bad_len = len(good) + 2 if length == -2 else length
        req = good[:1] + bad_len.to_bytes(3, "big") + good[4:]
        await m.send(req)
        frames = await m.assert_closed(5)
        assert len(frames) == 1, f"expected one 5015 answer before the close, got {frames}"
        M.check_answer_header(frames[0], req, e_bit=False)
        assert frames[0].result_code == 5015
        assert frames[0].one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()


@pytest.mark.parametrize("version", [1, 2], ids=["5015", "5011"])
async def test_framing_error_answer_to_an_ecr_is_still_an_eca(eir: Eir, version: int) -> None:
    """The answer to an unframeable ECR header is an ECA (command 324, S13): it needs
    Origin-Host, Origin-Realm and Auth-Session-State like every other ECA."""
    async with mme_on(eir) as m:
        good = M.to_bytes(M.ecr())
        req = bytes([version]) + (len(good) + (2 if version == 1 else 0)).to_bytes(3, "big") + good[4:]
        await m.send(req)
        frames = await m.assert_closed(5)
        assert len(frames) == 1
        ans = frames[0]
        assert ans.result_code == (5015 if version == 1 else 5011)
        assert ans.one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()
        assert ans.one(M.AVP_ORIGIN_REALM).data == EIR_REALM.encode()
        assert len(ans.find(M.AVP_AUTH_SESSION_STATE)) == 1, f"ECA without Auth-Session-State: {ans}"


async def test_pipelined_messages_answered_up_to_an_unframeable_one(eir: Eir) -> None:
    """Good ECR, bad version, good ECR in one write: one 2001, one 5011, close, nothing more."""
    async with mme_on(eir) as m:
        first, bad, third = M.to_bytes(M.ecr()), bytearray(M.to_bytes(M.ecr())), M.to_bytes(M.ecr())
        bad[0] = 0
        await m.send(first + bytes(bad) + third)
        frames = await m.assert_closed(5)
        assert [(f.hbh, f.result_code) for f in frames] == [
            (M.request_ids(first)[1], 2001),
            (M.request_ids(bytes(bad))[1], 5011),
        ]


@pytest.mark.parametrize("header_only", [False, True], ids=["whole-message", "header-only"])
async def test_message_above_max_size_gets_5015_and_close(header_only: bool) -> None:
    async with eir_with(tcp=True, diameter={"max_message_size": 1024}) as eir, mme_on(eir) as m:
        # Exactly at the limit is fine.
        base = M.to_bytes(M.ecr())
        filler_len = 1024 - len(base) - 12  # an unknown vendor AVP without M: ignored
        fit = M.with_avps(base, M.avp(4242, b"x" * filler_len, vendor=99999, flags=0))
        assert len(fit) == 1024
        ans = await m.request(fit)
        check_eca(ans, fit, 2001)
        # One word more is not.
        big = M.with_avps(base, M.avp(4242, b"x" * (filler_len + 4), vendor=99999, flags=0))
        assert len(big) == 1028
        await m.send(big[:20] if header_only else big)
        frames = await m.assert_closed(5)
        assert len(frames) == 1, f"expected one 5015 answer before the close, got {frames}"
        M.check_answer_header(frames[0], big, e_bit=False)
        assert frames[0].result_code == 5015
        assert frames[0].one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()


async def test_burst_of_pipelined_ecrs_all_answered(tcp_eir: RunningNode) -> None:
    """1000 ECRs written at once while the answers are read concurrently (flow control both ways)."""
    async with mme_on(tcp_eir) as m:
        reqs = [M.to_bytes(M.ecr((M.IMEI_BLACK, M.IMEI_GREY)[i % 2])) for i in range(1000)]
        sender = asyncio.create_task(m.send(b"".join(reqs)))
        for i, req in enumerate(reqs):
            ans = await m.read_answer(10)
            assert (ans.hbh, ans.e2e) == M.request_ids(req)[1:], f"answer {i} out of order"
            assert ans.equipment_status == (M.BLACKLISTED, M.GREYLISTED)[i % 2]
        await sender
        await assert_serves(m)


# -- capabilities exchange and the peer state machine -----------------------------------


async def test_cea_on_success_carries_every_capability(eir: Eir) -> None:
    m = await Mme.connect_to(eir)
    try:
        req = M.to_bytes(M.cer())
        cea = await m.request(req)
        M.check_answer_header(cea, req, e_bit=False)
        assert not cea.p_bit
        msg = cea.msg
        assert isinstance(msg, CapabilitiesExchangeAnswer)
        assert msg.result_code == 2001 and cea.result_code == 2001
        assert msg.origin_host == EIR_HOST.encode()
        assert msg.origin_realm == EIR_REALM.encode()
        assert msg.host_ip_address, "no Host-IP-Address"
        for _family, addr in msg.host_ip_address:
            ipaddress.ip_address(addr)
        assert msg.vendor_id is not None
        assert msg.product_name
        assert msg.firmware_revision is not None
        assert msg.origin_state_id is not None and msg.origin_state_id > 0
        assert 10415 in msg.supported_vendor_id
        vsai = [(v.vendor_id, v.auth_application_id) for v in msg.vendor_specific_application_id]
        assert (10415, M.APP_S13) in vsai
        assert msg.error_message is None and not cea.find(M.AVP_FAILED_AVP)
        # Flag rules of RFC 6733 §5.3.2 / §4.5: Product-Name and Firmware-Revision without M.
        assert not cea.one(M.AVP_PRODUCT_NAME).mandatory
        assert not cea.one(M.AVP_FIRMWARE_REVISION).mandatory
        await assert_serves(m)
    finally:
        await m.close()


async def test_cer_without_s13_gets_5010_and_close(eir: Eir) -> None:
    m = await Mme.connect_to(eir)
    req = M.to_bytes(M.cer(apps=[4], vendor_apps=[(10415, 16777251)]))  # Gy and S6a, no S13
    cea = await m.request(req)
    M.check_answer_header(cea, req, e_bit=False)
    assert cea.result_code == 5010
    assert isinstance(cea.msg, CapabilitiesExchangeAnswer)
    assert (await m.assert_closed(5)) == []


@pytest.mark.parametrize(
    ("apps", "vendor_apps"),
    [([M.APP_RELAY], []), ([M.APP_S13], []), ([4], [(10415, M.APP_S13)])],
    ids=["relay", "plain-auth-app-id", "vendor-specific"],
)
async def test_cer_common_application_accepted(eir: Eir, apps: list[int], vendor_apps: list[tuple[int, int]]) -> None:
    m = await Mme.connect_to(eir)
    try:
        cea = await m.request(M.cer(apps=apps, vendor_apps=vendor_apps))
        assert cea.result_code == 2001
        await assert_serves(m)
    finally:
        await m.close()


async def test_cer_from_unknown_origin_host_gets_3010_and_close(eir: Eir) -> None:
    m = await Mme.connect_to(eir)
    req = M.to_bytes(M.cer("rogue.mme.example", MME_REALM))
    cea = await m.request(req)
    M.check_answer_header(cea, req, e_bit=True)
    assert cea.result_code == 3010
    assert cea.msg.header.is_error
    assert (await m.assert_closed(5)) == []


async def test_cer_from_unknown_origin_host_accepted_when_allowed() -> None:
    async with (
        eir_with(peers={"allow_unknown": True}) as eir,
        mme_on(eir, origin_host="rogue.mme.example", origin_realm="elsewhere.test") as m,
    ):
        assert m.cea is not None and m.cea.result_code == 2001
        req = M.to_bytes(M.ecr(origin_host="rogue.mme.example", origin_realm="elsewhere.test"))
        ans = await m.request(req)
        check_eca(ans, req, 2001)


@pytest.mark.parametrize("first", ["ecr", "dwr", "dpr"])
async def test_request_before_cer_closes_without_answer(eir: Eir, first: str) -> None:
    m = await Mme.connect_to(eir)
    msg = {"ecr": M.ecr, "dwr": M.dwr, "dpr": M.dpr}[first]()
    await m.send(msg)
    data = await M.assert_closed(m.reader, 5)
    assert data == b"", f"no answer expected before CER, got {data.hex()}"


async def test_dwr_gets_dwa(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.dwr())
        dwa = await m.request(req)
        M.check_answer_header(dwa, req, e_bit=False)
        assert isinstance(dwa.msg, DeviceWatchdogAnswer)
        assert dwa.result_code == 2001
        assert dwa.msg.origin_host == EIR_HOST.encode()
        assert dwa.msg.origin_realm == EIR_REALM.encode()
        assert m.cea is not None
        assert dwa.msg.origin_state_id == m.cea.msg.origin_state_id
        await assert_serves(m)


async def test_dpr_gets_dpa_then_close(tcp_eir: RunningNode) -> None:
    async with mme_on(tcp_eir) as m:
        req = M.to_bytes(M.dpr(cause=2))
        dpa = await m.request(req)
        M.check_answer_header(dpa, req, e_bit=False)
        assert isinstance(dpa.msg, DisconnectPeerAnswer)
        assert dpa.result_code == 2001
        assert dpa.msg.origin_host == EIR_HOST.encode()
        assert (await m.assert_closed(5)) == []


async def test_node_stop_sends_dpr_and_closes_after_dpa() -> None:
    async with eir_with(tcp=True) as eir:
        m = await Mme.open_on(eir)
        stopper = asyncio.create_task(eir.node.stop())
        try:
            dpr = await m.read_answer(5)
            assert dpr.is_request and dpr.command == M.CMD_DPR and dpr.app == 0, dpr
            assert not dpr.e_bit and not dpr.p_bit
            assert dpr.msg.origin_host == EIR_HOST.encode()
            assert dpr.msg.disconnect_cause == 0  # REBOOTING
            await m.send(M.dpa_for(dpr))
            assert await m.assert_closed(5) == []
            await asyncio.wait_for(asyncio.shield(stopper), 3)  # no need to wait for the DPA timeout
        finally:
            await stopper
            await m.close()


TW = 6  # the smallest Tw RFC 3539 allows; the server adds ±2 s of jitter


def advance(seconds: float) -> None:
    """Move the event loop's clock (the one the node's watchdog timers run on) forward:
    the node's timers that come due fire at the loop's next turn, over the real socket,
    without the test waiting for them. Call it between awaits, never during one (a
    timeout already armed would expire early)."""
    loop = asyncio.get_running_loop()
    offset: list[float] | None = getattr(loop, "_test_clock_offset", None)
    if offset is None:
        clock, offset = loop.time, [0.0]
        loop._test_clock_offset = offset  # type: ignore[attr-defined]
        loop.time = lambda: clock() + offset[0]  # type: ignore[method-assign]
    offset[0] += seconds


async def run_clock(seconds: float, step: float = 0.25) -> None:
    """``advance`` by ``seconds`` in steps, letting the node take each timer when it is
    due. One jump would have it take a timer late, and a watchdog sets its next expiry
    from the time it handles the last one."""
    for _ in range(round(seconds / step)):
        advance(step)
        await asyncio.sleep(0.005)


async def test_watchdog_dwr_after_idle_and_dwa_keeps_the_connection() -> None:
    async with eir_with(tcp=True, peers={"watchdog_interval_s": TW}) as eir, mme_on(eir) as m:
        assert m.cea is not None
        # RFC 3539 §3.4.1: any received message resets the timer, so steady traffic (fast path
        # for whitelisted IMEIs, full path for listed ones) never draws a DWR: a request each
        # second of the loop's clock for Tw + 3 s.
        for i in range(TW + 3):
            advance(1.0)
            req = M.to_bytes(M.ecr((M.IMEI_UNLISTED, M.IMEI_BLACK)[i % 2]))
            ans = await m.request(req, answer_dwr=False)  # a DWR here fails the test
            assert ans.equipment_status == (M.WHITELISTED, M.BLACKLISTED)[i % 2]
        for _ in range(2):  # a second DWR shows that our DWA cleared the pending state
            advance(TW - 2 - 0.5)  # idle, but less than Tw minus its jitter: no DWR yet
            await m.assert_silent(0.2)
            advance(4.5)  # past Tw plus its jitter
            dwr = await m.read_answer(timeout=5)
            assert dwr.is_request and dwr.command == M.CMD_DWR and dwr.app == 0, dwr
            assert not dwr.e_bit and not dwr.p_bit
            assert dwr.msg.origin_host == EIR_HOST.encode()
            assert dwr.msg.origin_realm == EIR_REALM.encode()
            assert dwr.msg.origin_state_id == m.cea.msg.origin_state_id
            await m.send(M.dwa_for(dwr))
            await assert_serves(m)


async def test_watchdog_unanswered_dwr_closes_after_two_more_expiries() -> None:
    async with eir_with(tcp=True, peers={"watchdog_interval_s": TW}) as eir, mme_on(eir) as m:
        advance(TW + 2 + 0.1)
        dwr = await m.read_answer(timeout=5)
        assert dwr.is_request and dwr.command == M.CMD_DWR
        # RFC 3539: the next expiry with the DWR pending -> SUSPECT, the one after -> close;
        # each at least Tw - 2 s after the last.
        await run_clock(2 * (TW - 2) - 0.5)
        await m.assert_silent(0.2)  # not before two expiries
        await run_clock(2 * 4 + 1)
        frames = await m.assert_closed(timeout=5)
        assert all(f.is_request and f.command in (M.CMD_DWR, M.CMD_DPR) for f in frames), frames


async def test_second_connection_with_same_origin_state_id_rejected(eir: Eir) -> None:
    async with mme_on(eir, state_id=1000) as first:
        second = await Mme.connect_to(eir)
        req = M.to_bytes(M.cer(state_id=1000))
        cea = await second.request(req)
        M.check_answer_header(cea, req, e_bit=False)
        assert cea.result_code == 5012
        assert (await second.assert_closed(5)) == []
        await assert_serves(first)


async def test_second_connection_with_new_origin_state_id_replaces_the_old(tcp_eir: RunningNode) -> None:
    old = await Mme.open_on(tcp_eir, state_id=1000)
    async with mme_on(tcp_eir, state_id=1001) as new:
        frames = await old.assert_closed(5)
        assert all(f.is_request for f in frames), f"unexpected answers on the replaced connection: {frames}"
        await assert_serves(new)
        # The new connection is now the registered one: the same state id again is refused.
        third = await Mme.connect_to(tcp_eir)
        cea = await third.request(M.cer(state_id=1001))
        assert cea.result_code == 5012
        await third.assert_closed(5)
        await assert_serves(new)
    await old.close()


# -- protocol errors (3xxx, E-bit) ------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "command", "flags"),
    [(M.APP_S13, 999, M.FLAG_R | M.FLAG_P), (0, 258, M.FLAG_R | M.FLAG_P), (0, 271, M.FLAG_R | M.FLAG_P)],
    ids=["s13-999", "base-RAR", "base-ACR"],
)
async def test_unknown_command_gets_3001(eir: Eir, app: int, command: int, flags: int) -> None:
    async with mme_on(eir) as m:
        req = M.message(flags, command, app, M.raw_ecr_avps())
        ans = await m.request(req)
        M.check_answer_header(ans, req, e_bit=True)
        assert ans.result_code == 3001
        assert ans.one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()
        await assert_serves(m)


async def test_destination_host_not_ours_gets_3002(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.ecr(destination_host="other-eir.s13eir.test"))
        ans = await m.request(req)
        check_eca(ans, req, 3002)
        await assert_serves(m)


async def test_destination_host_ours_in_any_case_accepted(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.ecr(destination_host=EIR_HOST.upper()))
        check_eca(await m.request(req), req, 2001)


async def test_wrong_application_gets_3007(eir: Eir) -> None:
    async with mme_on(eir) as m:
        msg = M.ecr()
        msg.header.application_id = 16777251  # S6a
        req = M.to_bytes(msg)
        ans = await m.request(req)
        M.check_answer_header(ans, req, e_bit=True)
        assert ans.result_code == 3007
        await assert_serves(m)


async def test_e_bit_in_request_gets_3008(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.set_flags(M.to_bytes(M.ecr()), M.FLAG_R | M.FLAG_P | M.FLAG_E)
        ans = await m.request(req)
        check_eca(ans, req, 3008)
        await assert_serves(m)


async def test_ecr_without_p_bit_gets_3008(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.set_flags(M.to_bytes(M.ecr()), M.FLAG_R)
        ans = await m.request(req)
        check_eca(ans, req, 3008)
        await assert_serves(m)


async def test_dwr_with_p_bit_gets_3008(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.set_flags(M.to_bytes(M.dwr()), M.FLAG_R | M.FLAG_P)
        ans = await m.request(req)
        M.check_answer_header(ans, req, e_bit=True)
        assert ans.result_code == 3008
        await assert_serves(m)


@pytest.mark.parametrize("extra", [M.FLAG_T, 0x01, 0x0F], ids=["T-bit", "reserved-bit", "all-reserved-bits"])
async def test_t_bit_and_reserved_bits_in_ecr_accepted(eir: Eir, extra: int) -> None:
    """RFC 6733 §3: reserved bits are ignored by the receiver; T is never set in an answer."""
    async with mme_on(eir) as m:
        req = M.set_flags(M.to_bytes(M.ecr()), M.FLAG_R | M.FLAG_P | extra)
        ans = await m.request(req)
        check_eca(ans, req, 2001)  # check_answer_header: no T, no reserved bits in the answer
        assert ans.equipment_status == M.WHITELISTED


async def test_silent_connection_closed_after_cer_timeout() -> None:
    # RFC 6733 §5.6, Closed state: no CER within the timer, the connection is dropped. The
    # loop's clock is moved past it (the test waits for no protocol timer in real time).
    async with eir_with(tcp=True, diameter={"cer_timeout_s": 10}) as eir:
        m = await Mme.connect_to(eir)
        await m.assert_silent(0.2)  # open, and nothing sent, before the timer
        advance(10.5)
        assert await M.assert_closed(m.reader, 5) == b""


# -- permanent failures (5xxx) --------------------------------------------------------


@pytest.mark.parametrize("vendor", [None, M.VENDOR_3GPP, 99999], ids=["ietf", "3gpp", "other-vendor"])
async def test_unknown_avp_with_m_bit_gets_5001(eir: Eir, vendor: int | None) -> None:
    async with mme_on(eir) as m:
        bad = M.avp(4711, b"\x01\x02\x03", vendor=vendor, flags=M.AVP_M)  # odd length, padded
        req = M.with_avps(M.to_bytes(M.ecr()), bad)
        ans = await m.request(req)
        check_eca(ans, req, 5001)
        inner = check_failed(ans, 4711, vendor or 0)
        assert inner.padded == bad, "Failed-AVP must carry the offending AVP as received"
        await assert_serves(m)


async def test_unknown_avp_with_m_bit_inside_terminal_information_gets_5001(eir: Eir) -> None:
    async with mme_on(eir) as m:
        bad = M.avp(4711, b"zz", vendor=M.VENDOR_3GPP, flags=M.AVP_M)
        ti = M.grouped(M.AVP_TERMINAL_INFORMATION, M.utf8(M.AVP_IMEI, M.IMEI_BLACK, vendor=M.VENDOR_3GPP), bad,
                       vendor=M.VENDOR_3GPP)  # fmt: skip
        avps = [a for a in M.raw_ecr_avps() if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION] + [ti]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 5001)
        inner = check_failed(ans, 4711, M.VENDOR_3GPP, inside=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP))
        assert inner.padded == bad
        await assert_serves(m)


async def test_unknown_avps_without_m_bit_are_ignored(eir: Eir) -> None:
    async with mme_on(eir) as m:
        ti = M.grouped(
            M.AVP_TERMINAL_INFORMATION,
            M.utf8(M.AVP_IMEI, M.IMEI_GREY, vendor=M.VENDOR_3GPP),
            M.avp(4711, b"zz", vendor=M.VENDOR_3GPP, flags=0),
            vendor=M.VENDOR_3GPP,
        )
        avps = [a for a in M.raw_ecr_avps() if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION] + [ti]
        avps += [M.avp(4712, b"abc", flags=0), M.avp(4713, b"", vendor=99999, flags=0)]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.GREYLISTED


async def test_known_avps_with_unexpected_m_bit_are_accepted(eir: Eir) -> None:
    async with mme_on(eir) as m:
        # M cleared where the dictionaries say "must": Session-Id, Terminal-Information, IMEI, User-Name.
        ti = M.grouped(M.AVP_TERMINAL_INFORMATION, M.utf8(M.AVP_IMEI, M.IMEI_GREY, vendor=M.VENDOR_3GPP, flags=0),
                       vendor=M.VENDOR_3GPP, flags=0)  # fmt: skip
        avps = [
            M.utf8(M.AVP_SESSION_ID, f"{MME_HOST};m-bit", flags=0),
            M.u32(M.AVP_AUTH_SESSION_STATE, 1),
            M.utf8(M.AVP_ORIGIN_HOST, MME_HOST),
            M.utf8(M.AVP_ORIGIN_REALM, MME_REALM),
            M.utf8(M.AVP_DESTINATION_REALM, EIR_REALM),
            ti,
            M.utf8(M.AVP_USER_NAME, "001010000000009", flags=0),
        ]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.GREYLISTED


async def test_cer_with_product_name_m_bit_set_accepted(eir: Eir) -> None:
    m = await Mme.connect_to(eir)
    try:
        head, avps = M.split(M.to_bytes(M.cer()))
        avps = [M.utf8(M.AVP_PRODUCT_NAME, "m-bit-mme", flags=M.AVP_M) if M.avp_code(a) == M.AVP_PRODUCT_NAME else a
                for a in avps]  # fmt: skip
        cea = await m.request(M.join(head, avps))
        assert cea.result_code == 2001
        await assert_serves(m)
    finally:
        await m.close()


async def test_undefined_enumerated_value_gets_5004(eir: Eir) -> None:
    async with mme_on(eir) as m:
        bad = M.u32(M.AVP_AUTH_SESSION_STATE, 7)
        avps = [bad if M.avp_code(a) == M.AVP_AUTH_SESSION_STATE else a for a in M.raw_ecr_avps()]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 5004)
        assert check_failed(ans, M.AVP_AUTH_SESSION_STATE).padded == bad
        await assert_serves(m)


async def test_session_id_not_utf8_gets_5004_and_a_well_formed_answer(eir: Eir) -> None:
    """Session-Id is a UTF8String: invalid UTF-8 is 5004 with Failed-AVP = Session-Id. The answer must
    still be well-formed Diameter (the bad value belongs in Failed-AVP, not echoed as a Session-Id)."""
    async with mme_on(eir) as m:
        bad = M.avp(M.AVP_SESSION_ID, b"mme.s13eir.test;\xff\xfe;1")
        req = M.raw_ecr([bad, *M.raw_ecr_avps()[1:]])
        await m.send(req)
        frame = await m.read_frame()
        ans = Answer.parse(frame)  # python-diameter must be able to decode the answer
        check_eca(ans, req, 5004, session_id=False)
        assert check_failed(ans, M.AVP_SESSION_ID).padded == bad
        await assert_serves(m)


MALFORMED = ["3520990017614A", "3520990017614", "35209900176148123", "", "352099 0017614", "३५२०९९००१७६१४८"]


@pytest.mark.parametrize(
    "imei", [*MALFORMED, "3520990017614812"], ids=["letter", "13-digits", "17-digits", "empty", "space",
                                                   "non-ascii-digits", "16-digits"]
)  # fmt: skip
async def test_malformed_imei_gets_5004_with_terminal_information_imei(eir: Eir, imei: str) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.ecr(imei, sv="01"))
        ans = await m.request(req)
        check_eca(ans, req, 5004)
        inner = check_failed(ans, M.AVP_IMEI, M.VENDOR_3GPP, inside=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP))
        assert inner.data == imei.encode()
        await assert_serves(m)


@pytest.mark.parametrize(
    ("policy", "status"),
    [("blacklisted", M.BLACKLISTED), ("greylisted", M.GREYLISTED), ("whitelisted", M.WHITELISTED)],
)
async def test_malformed_imei_policy_answers_2001_with_that_status(policy: str, status: int) -> None:
    async with eir_with(policy={"malformed_imei": policy}) as eir, mme_on(eir) as m:
        for imei in ["3520990017614A", "123", "3520990017614812"]:
            req = M.to_bytes(M.ecr(imei))
            ans = await m.request(req)
            check_eca(ans, req, 2001)
            assert ans.equipment_status == status, f"{imei}: {ans}"
            assert not ans.find(M.AVP_FAILED_AVP)
        await assert_serves(m)


async def test_16_digit_imei_split_policy_reads_imei_and_svn() -> None:
    async with eir_with(policy={"imeisv_in_imei": "split"}) as eir, mme_on(eir) as m:
        for imei, status in [(M.IMEI_BLACK + "05", M.BLACKLISTED), (M.IMEI_GREY + "99", M.GREYLISTED)]:
            req = M.to_bytes(M.ecr(imei))
            ans = await m.request(req)
            check_eca(ans, req, 2001)
            assert ans.equipment_status == status
        # Still malformed: 17 digits, or 16 with a letter.
        for imei in ["35209900176148051", "352099001761480A"]:
            req = M.to_bytes(M.ecr(imei))
            check_eca(await m.request(req), req, 5004)


@pytest.mark.parametrize("imei", ["352099001761481", "352099001761489", "352099001761480"])
async def test_15_digit_imei_accepted_without_luhn_check(eir: Eir, imei: str) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.ecr(imei))
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.BLACKLISTED


async def test_missing_terminal_information_gets_5005(eir: Eir) -> None:
    async with mme_on(eir) as m:
        req = M.to_bytes(M.ecr(terminal_information=False))
        ans = await m.request(req)
        check_eca(ans, req, 5005)
        check_failed(ans, M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)
        await assert_serves(m)


@pytest.mark.parametrize("content", ["software-version-only", "empty"])
async def test_missing_imei_in_terminal_information_gets_5005(eir: Eir, content: str) -> None:
    async with mme_on(eir) as m:
        children = [M.utf8(M.AVP_SOFTWARE_VERSION, "01", vendor=M.VENDOR_3GPP)] if content != "empty" else []
        ti = M.grouped(M.AVP_TERMINAL_INFORMATION, *children, vendor=M.VENDOR_3GPP)
        avps = [a for a in M.raw_ecr_avps() if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION] + [ti]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 5005)
        check_failed(ans, M.AVP_IMEI, M.VENDOR_3GPP, inside=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP))
        await assert_serves(m)


@pytest.mark.parametrize(
    "missing",
    [M.AVP_SESSION_ID, M.AVP_AUTH_SESSION_STATE, M.AVP_ORIGIN_HOST, M.AVP_ORIGIN_REALM, M.AVP_DESTINATION_REALM],
    ids=["Session-Id", "Auth-Session-State", "Origin-Host", "Origin-Realm", "Destination-Realm"],
)
async def test_missing_required_avp_gets_5005_with_an_example(eir: Eir, missing: int) -> None:
    async with mme_on(eir) as m:
        req = M.raw_ecr([a for a in M.raw_ecr_avps() if M.avp_code(a) != missing])
        ans = await m.request(req)
        check_eca(ans, req, 5005)
        check_failed(ans, missing)
        await assert_serves(m)


@pytest.mark.parametrize(
    "twice",
    [
        M.utf8(M.AVP_USER_NAME, "001010000000002"),
        M.u32(M.AVP_AUTH_SESSION_STATE, 0),
        M.utf8(M.AVP_DESTINATION_REALM, "second.realm.test"),
        M.grouped(M.AVP_TERMINAL_INFORMATION, M.utf8(M.AVP_IMEI, M.IMEI_GREY, vendor=M.VENDOR_3GPP),
                  vendor=M.VENDOR_3GPP),
        M.utf8(M.AVP_SESSION_ID, "second;session"),
    ],
    ids=["User-Name", "Auth-Session-State", "Destination-Realm", "Terminal-Information", "Session-Id"],
)  # fmt: skip
async def test_avp_too_many_times_gets_5009_with_the_first_excess(eir: Eir, twice: bytes) -> None:
    async with mme_on(eir) as m:
        req = M.raw_ecr([*M.raw_ecr_avps(imsi="001010000000001"), twice])
        ans = await m.request(req)
        check_eca(ans, req, 5009)
        parsed = M.decode_avps(twice)[0]
        inner = check_failed(ans, parsed.code, parsed.vendor)
        assert inner.padded == twice, "Failed-AVP must be the first instance that exceeded the maximum"
        await assert_serves(m)


async def test_imei_twice_in_terminal_information_gets_5009_nested(eir: Eir) -> None:
    async with mme_on(eir) as m:
        second = M.utf8(M.AVP_IMEI, M.IMEI_GREY, vendor=M.VENDOR_3GPP)
        ti = M.grouped(M.AVP_TERMINAL_INFORMATION, M.utf8(M.AVP_IMEI, M.IMEI_BLACK, vendor=M.VENDOR_3GPP), second,
                       vendor=M.VENDOR_3GPP)  # fmt: skip
        avps = [a for a in M.raw_ecr_avps() if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION] + [ti]
        req = M.raw_ecr(avps)
        ans = await m.request(req)
        check_eca(ans, req, 5009)
        inner = check_failed(ans, M.AVP_IMEI, M.VENDOR_3GPP, inside=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP))
        assert inner.padded == second
        await assert_serves(m)


def _ti_with(*children: bytes) -> bytes:
    return M.grouped(M.AVP_TERMINAL_INFORMATION, *children, vendor=M.VENDOR_3GPP)


BAD_LENGTHS = {
    # name: (AVPs appended after the good ones / replacing Terminal-Information, failed code, vendor, wrapper)
    "overruns-message": (
        [M.avp(M.AVP_USER_NAME, b"001010000000001", length=8 + 15 + 40)], M.AVP_USER_NAME, 0, None),
    "shorter-than-header": ([M.avp(M.AVP_USER_NAME, b"0010", length=4)], M.AVP_USER_NAME, 0, None),
    "vendor-shorter-than-header": (
        [M.avp(4711, b"abcd", vendor=M.VENDOR_3GPP, flags=0, length=10)], 4711, M.VENDOR_3GPP, None),
    "unsigned32-with-5-bytes": ([M.avp(M.AVP_ORIGIN_STATE_ID, b"\0\0\0\1\2")], M.AVP_ORIGIN_STATE_ID, 0, None),
    "imei-overruns-terminal-information": (
        [_ti_with(M.avp(M.AVP_IMEI, M.IMEI_BLACK.encode(), vendor=M.VENDOR_3GPP, length=12 + 14 + 8))],
        M.AVP_IMEI, M.VENDOR_3GPP, (M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)),
    "proxy-host-overruns-proxy-info": (
        [M.grouped(M.AVP_PROXY_INFO, M.avp(M.AVP_PROXY_HOST, b"dra.s13eir.test", length=0x800017),
                   M.avp(M.AVP_PROXY_STATE, b"st"))],
        M.AVP_PROXY_HOST, 0, (M.AVP_PROXY_INFO, 0)),
    "stray-bytes-in-terminal-information": (
        [_ti_with(M.utf8(M.AVP_IMEI, M.IMEI_BLACK, vendor=M.VENDOR_3GPP), b"\0\0\x05\x7b")],
        None, None, (M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_LENGTHS))
async def test_invalid_avp_length_gets_5014(eir: Eir, case: str) -> None:
    extra, code, vendor, wrapper = BAD_LENGTHS[case]
    async with mme_on(eir) as m:
        avps = M.raw_ecr_avps()
        if wrapper is not None:
            avps = [a for a in avps if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION]
        req = M.raw_ecr([*avps, *extra])
        ans = await m.request(req)
        # Session-Id and Proxy-Info echo: see test_proxy_info_and_session_id_echoed...[5014-last-avp]
        check_eca(ans, req, 5014, session_id=False)
        if code is not None:
            assert vendor is not None
            check_failed(ans, code, vendor, inside=wrapper)
        else:
            assert wrapper is not None
            assert [(a.code, a.vendor) for a in ans.failed_avps] == [wrapper]
        await assert_serves(m)


# -- echoing: identifiers, Proxy-Info, Vendor-Specific-Application-Id ----------------------

PROXY_INFOS = [
    M.grouped(
        M.AVP_PROXY_INFO,
        M.utf8(M.AVP_PROXY_HOST, "dra1.s13eir.test"),
        M.avp(M.AVP_PROXY_STATE, b"\x00\xffstate-1"),
        M.avp(9001, b"\x01\x02\x03", vendor=12345, flags=0),  # an unknown inner AVP, odd length
    ),
    M.grouped(
        M.AVP_PROXY_INFO,
        M.avp(M.AVP_PROXY_STATE, b"s2"),  # inner order as the proxy wrote it
        M.utf8(M.AVP_PROXY_HOST, "dra2.s13eir.test"),
    ),
]

ECHO_CASES = {
    "2001": (lambda avps: avps, 2001),
    "5422": (lambda avps: avps, None),
    "5004-imei": (lambda avps: [_ti_with(M.utf8(M.AVP_IMEI, "12", vendor=M.VENDOR_3GPP)) if
                                M.avp_code(a) == M.AVP_TERMINAL_INFORMATION else a for a in avps], 5004),
    "5005": (lambda avps: [a for a in avps if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION], 5005),
    "5001": (lambda avps: [*avps, M.avp(4711, b"x", vendor=99999)], 5001),
    "5009": (lambda avps: [*avps, M.utf8(M.AVP_ORIGIN_REALM, "again.test")], 5009),
    "5014-last-avp": (lambda avps: [*avps, M.avp(M.AVP_ROUTE_RECORD, b"r.test", length=200)], 5014),
    "3002": (lambda avps: [*avps, M.utf8(M.AVP_DESTINATION_HOST, "elsewhere.test")], 3002),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ECHO_CASES))
async def test_proxy_info_and_session_id_echoed_in_order_byte_for_byte(case: str) -> None:
    change, code = ECHO_CASES[case]
    imei = M.IMEI_UNLISTED if case == "5422" else M.IMEI_BLACK
    policy = {"unknown_imei": "unknown"} if case == "5422" else {}
    async with eir_with(policy=policy) as eir, mme_on(eir) as m:
        base = M.raw_ecr_avps(imei, session_id=f"{MME_HOST};echo;{case}")
        req = M.raw_ecr(change([*base, *PROXY_INFOS]))
        ans = await m.request(req)
        check_eca(ans, req, code)
        assert ans.avps[0].code == M.AVP_SESSION_ID, f"no Session-Id first in {ans}"
        assert ans.avps[0].padded == base[0], "Session-Id must be echoed"
        echoed = [a.padded for a in ans.find(M.AVP_PROXY_INFO)]
        assert echoed == PROXY_INFOS, "Proxy-Info must be echoed in order and byte for byte"
        assert [p.proxy_host for p in ans.msg.proxy_info] == [b"dra1.s13eir.test", b"dra2.s13eir.test"]
        await assert_serves(m, M.IMEI_GREY, M.GREYLISTED)


async def test_vendor_specific_application_id_in_ecr_ignored(eir: Eir) -> None:
    async with mme_on(eir) as m:
        for vendor, app in [(M.VENDOR_3GPP, M.APP_S13), (0, 4), (M.VENDOR_3GPP, 16777251)]:
            vsai = M.grouped(M.AVP_VSAI, M.u32(M.AVP_VENDOR_ID, vendor), M.u32(M.AVP_AUTH_APPLICATION_ID, app))
            req = M.raw_ecr([*M.raw_ecr_avps()[:1], vsai, *M.raw_ecr_avps()[1:]])
            ans = await m.request(req)
            check_eca(ans, req, 2001)  # check_eca: no Vendor-Specific-Application-Id in the ECA
            assert ans.equipment_status == M.WHITELISTED


async def test_malformed_vendor_specific_application_id_in_ecr_ignored(eir: Eir) -> None:
    """TS 29.272 §7.2.1: the receiver ignores Vendor-Specific-Application-Id, so a V-S-A-Id
    without its { Vendor-Id } is no reason to refuse the ECR."""
    async with mme_on(eir) as m:
        vsai = M.grouped(M.AVP_VSAI, M.u32(M.AVP_AUTH_APPLICATION_ID, M.APP_S13))
        req = M.raw_ecr([*M.raw_ecr_avps()[:1], vsai, *M.raw_ecr_avps()[1:]])
        ans = await m.request(req)
        check_eca(ans, req, 2001)
        assert ans.equipment_status == M.WHITELISTED


async def test_identifiers_echoed_for_extreme_values(eir: Eir) -> None:
    async with mme_on(eir) as m:
        for hbh, e2e in [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0x80000000, 1)]:
            req = M.to_bytes(M.ecr(hbh=hbh, e2e=e2e))
            ans = await m.request(req)
            check_eca(ans, req, 2001)


# -- S13 answer shapes ----------------------------------------------------------------------


async def test_unknown_equipment_in_restrictive_mode_is_experimental_result_5422() -> None:
    async with eir_with(policy={"unknown_imei": "unknown"}) as eir, mme_on(eir) as m:
        req = M.to_bytes(M.ecr(M.IMEI_UNLISTED))
        ans = await m.request(req)
        check_eca(ans, req, None, e_bit=False)
        assert ans.result_code is None and ans.msg.result_code is None
        assert ans.experimental_result == (10415, 5422)
        assert ans.msg.experimental_result.experimental_result_code == 5422
        assert ans.msg.experimental_result.vendor_id == 10415
        assert ans.equipment_status is None, "no Equipment-Status with 5422"
        await assert_serves(m, M.IMEI_BLACK, M.BLACKLISTED)  # listed IMEIs still get 2001


async def test_exception_pair_and_software_version(eir: Eir) -> None:
    async with mme_on(eir) as m:
        for imsi, status in [("001010000000001", M.WHITELISTED), ("001010000000002", M.BLACKLISTED)]:
            req = M.to_bytes(M.ecr(M.IMEI_BLACK, imsi=imsi, sv="42"))
            ans = await m.request(req)
            check_eca(ans, req, 2001)
            assert ans.equipment_status == status


# -- isolation --------------------------------------------------------------------------------


async def test_abuse_on_one_connection_does_not_disturb_another(tcp_eir: RunningNode) -> None:
    stop = asyncio.Event()
    abuse_rounds = 0

    async def abuse() -> None:
        nonlocal abuse_rounds
        survivable = [  # each answered, the connection stays open
            M.raw_ecr([*M.raw_ecr_avps(), M.avp(1, b"x", length=99)]),  # 5014
            M.set_flags(M.to_bytes(M.ecr()), 0xE0),  # 3008
            M.message(M.FLAG_R, 4242, 0, M.raw_ecr_avps()),  # 3001
            M.with_avps(M.to_bytes(M.ecr()), M.avp(4711, b"x", vendor=99999)),  # 5001
        ]
        closers = [
            b"\x00" * 64,  # version 0: 5011 + close
            b"\x01\xff\xff\xff" + b"\xaa" * 60,  # too long: 5015 + close
            b"\x01\x00\x00\x15" + b"\x80" * 60,  # not a multiple of 4: 5015 + close
            bytes(range(1, 256)) * 4,  # version 1, length 0x020304: too long
        ]
        while not stop.is_set():
            m = await Mme.open_on(tcp_eir, state_id=abuse_rounds + 10)
            for g in [*survivable, closers[abuse_rounds % len(closers)]]:
                with contextlib.suppress(OSError):
                    m.writer.write(g)
                    await m.writer.drain()
                await asyncio.sleep(0)
            with contextlib.suppress(AssertionError, OSError):
                await m.assert_closed(5)
            await m.close()
            abuse_rounds += 1

    async def good() -> None:
        async with mme_on(tcp_eir, origin_host="mme2.s13eir.test") as m:
            cases = [(M.IMEI_BLACK, M.BLACKLISTED), (M.IMEI_GREY, M.GREYLISTED), (M.IMEI_UNLISTED, M.WHITELISTED)]
            for i in range(150):
                imei, status = cases[i % 3]
                req = M.to_bytes(M.ecr(imei, origin_host="mme2.s13eir.test"))
                ans = await m.request(req, timeout=5)
                check_eca(ans, req, 2001)
                assert ans.equipment_status == status
                await asyncio.sleep(0.002)
        stop.set()

    abuser = asyncio.create_task(abuse())
    try:
        await asyncio.wait_for(good(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(abuser, 10)
    assert abuse_rounds >= 1


def test_mme_helper_raw_builders_agree_with_python_diameter() -> None:
    """The struct-built ECR decodes with python-diameter to what was meant."""
    from diameter.message import Message

    req = M.raw_ecr(M.raw_ecr_avps(M.IMEI_GREY, imsi="001010000000001", sv="07"), hbh=7, e2e=9)
    msg = Message.from_bytes(req)
    assert msg.header.is_request and msg.header.is_proxyable
    assert msg.header.application_id == M.APP_S13
    assert msg.terminal_information.imei == M.IMEI_GREY
    assert msg.terminal_information.software_version == "07"
    assert msg.user_name == "001010000000001"
    assert (msg.header.hop_by_hop_identifier, msg.header.end_to_end_identifier) == (7, 9)
    assert struct.unpack("!I", req[:4])[0] & 0xFFFFFF == len(req)
