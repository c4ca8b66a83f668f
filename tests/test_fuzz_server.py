"""Hypothesis against the live server: garbage after a good CER, and mutated ECRs.

The node runs in its own thread and event loop for the whole module, with an
exception handler that records anything the server's loop did not handle.
Every example uses its own connection: CER, the fuzzed bytes, then a half-close
so that the server has to finish (answer what it can, then close) within a
bounded time. Afterwards:

* every byte the server sent frames exactly, and every frame decodes with
  python-diameter and with the raw reader;
* every answer echoes the command code and identifiers of a request the stream
  contained (at most one answer per request), and its E-bit is set exactly on 3xxx;
* a request whose header and length were left intact got exactly one answer,
  shaped like an ECA (Auth-Session-State, Origin-Host, one of Result-Code and
  Experimental-Result, Equipment-Status only with 2001);
* the server's loop recorded no unhandled exception;
* a fresh connection still gets BLACKLISTED for a blacklisted IMEI.

The number of examples comes from the Hypothesis profile (conftest.py: 60).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from s13eir.config import Config
from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import EIR_HOST, RunningNode, node_config, running_node
from tests.mme import Answer, Mme

pytestmark = pytest.mark.timeout(120)

MAX_SIZE = 1024  # lowered so that random length fields reach every framing branch
EXAMPLE_TIMEOUT = 5.0


class ServerThread:
    """A node in a thread of its own, so that synchronous Hypothesis tests can drive it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.errors: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.node: RunningNode | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="eir-under-fuzz", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._failure = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(self._on_error)
        self._stop = asyncio.Event()
        async with running_node(self.config) as rn:
            self.node = rn
            self.ready.set()
            await self._stop.wait()

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(context)
        loop.default_exception_handler(context)

    def start(self) -> RunningNode:
        self.thread.start()
        if not self.ready.wait(20) or self.node is None:
            raise RuntimeError(f"the node did not start: {self._failure!r}")
        return self.node

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    s = ServerThread(config_from_mapping(node_config(diameter={"max_message_size": MAX_SIZE})))
    s.start()
    try:
        yield s
    finally:
        s.stop()


_state_ids = itertools.count(1000)


# -- what the stream contains, by the same framing rules as RFC 6733 §3 ------------------


@dataclass(frozen=True)
class SentRequest:
    command: int
    hbh: int
    e2e: int
    intact: bool  # a complete, framable request whose header is the original ECR's


def requests_in(payload: bytes, original_head: bytes | None = None) -> list[SentRequest]:
    """The requests the server can see in ``payload``, including the header of an
    unframeable message (answered with 5011/5015)."""
    out: list[SentRequest] = []
    pos = 0
    while len(payload) - pos >= 4:
        version = payload[pos]
        length = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        bad = version != 1 or length < 20 or length % 4 or length > MAX_SIZE
        if len(payload) - pos < 20:
            break
        _, f_cmd, _, hbh, e2e = struct.unpack_from("!IIIII", payload, pos)
        if bad:
            if f_cmd >> 24 & M.FLAG_R:
                out.append(SentRequest(f_cmd & 0xFFFFFF, hbh, e2e, False))
            break
        if len(payload) - pos < length:
            break
        intact = original_head is not None and pos == 0 and _same_header(payload[:20], original_head, length)
        if f_cmd >> 24 & M.FLAG_R:
            out.append(SentRequest(f_cmd & 0xFFFFFF, hbh, e2e, intact))
        pos += length
    return out


def _same_header(head: bytes, original: bytes, length: int) -> bool:
    return head[0] == 1 and head[4:] == original[4:] and length == int.from_bytes(head[1:4], "big")


# -- one example -----------------------------------------------------------------------


async def exchange(port: int, payload: bytes, *, cer: bool = True) -> list[Answer]:
    """CER (unless told not to), ``payload``, half-close; everything the server sent until it closed."""
    if cer:
        m = await Mme.open("127.0.0.1", port, state_id=next(_state_ids))
    else:
        m = await Mme.connect("127.0.0.1", port)
    try:
        if payload:
            m.writer.write(payload)
            await m.writer.drain()
        if m.writer.can_write_eof():
            m.writer.write_eof()
        return await m.assert_closed(EXAMPLE_TIMEOUT)
    finally:
        await m.close()


async def still_serves(port: int) -> None:
    m = await Mme.open("127.0.0.1", port, origin_host="mme2.s13eir.test", state_id=next(_state_ids))
    try:
        for imei, status in [(M.IMEI_BLACK, M.BLACKLISTED), (M.IMEI_UNLISTED, M.WHITELISTED)]:
            ans = await m.request(M.ecr(imei, origin_host="mme2.s13eir.test"), EXAMPLE_TIMEOUT)
            assert ans.result_code == 2001 and ans.equipment_status == status, ans
    finally:
        await m.close()


def run_example(
    server: ServerThread, payload: bytes, original_head: bytes | None = None, *, cer: bool = True
) -> list[Answer]:
    assert server.node is not None
    port = server.node.port
    before = len(server.errors)

    async def go() -> list[Answer]:
        answers = await asyncio.wait_for(exchange(port, payload, cer=cer), EXAMPLE_TIMEOUT * 2)
        await asyncio.wait_for(still_serves(port), EXAMPLE_TIMEOUT * 2)
        return answers

    answers = asyncio.run(go())
    assert server.errors[before:] == [], f"unhandled exception in the server: {server.errors[before:]}"
    check_answers(payload, answers, requests_in(payload, original_head))
    return answers


def check_answers(payload: bytes, answers: list[Answer], sent: list[SentRequest]) -> None:
    by_ids = {(r.command, r.hbh, r.e2e): r for r in sent}
    budget = Counter((r.command, r.hbh, r.e2e) for r in sent)  # two requests may share identifiers
    seen: set[tuple[int, int, int]] = set()
    for ans in answers:
        if ans.is_request:  # the server may only ask DWR (or DPR) on its own
            assert ans.command in (M.CMD_DWR, M.CMD_DPR), ans
            continue
        key = (ans.command, ans.hbh, ans.e2e)
        assert key in by_ids, f"answer {ans} matches no request sent in {payload.hex()}"
        assert budget[key] > 0, f"more answers than requests for these identifiers: {ans}"
        budget[key] -= 1
        seen.add(key)
        rc = ans.result_code
        if rc is not None:
            assert ans.e_bit == (3000 <= rc < 4000), f"E-bit must be set exactly on 3xxx: {ans}"
        assert ans.one(M.AVP_ORIGIN_HOST).data == EIR_HOST.encode()
        if by_ids[key].intact and ans.command == M.CMD_ECR:
            check_eca_shape(ans)
    for r in sent:
        if r.intact:
            assert (r.command, r.hbh, r.e2e) in seen, f"no answer to an intact request in {payload.hex()}"


def check_eca_shape(ans: Answer) -> None:
    assert ans.command == M.CMD_ECR and ans.app == M.APP_S13, ans
    # 3xxx (E-bit) answers are RFC 6733 §7.2 answer-messages: Auth-Session-State optional there.
    n_ass = len(ans.find(M.AVP_AUTH_SESSION_STATE))
    assert n_ass <= 1, f"Auth-Session-State repeated: {ans}"
    assert n_ass == 1 or ans.e_bit, f"ECA without Auth-Session-State: {ans}"
    rc, exp = ans.result_code, ans.experimental_result
    assert (rc is None) != (exp is None), f"an ECA carries exactly one of Result-Code and Experimental-Result: {ans}"
    if rc != 2001:
        assert ans.equipment_status is None, f"Equipment-Status without 2001: {ans}"
    else:
        assert ans.equipment_status in (M.WHITELISTED, M.BLACKLISTED, M.GREYLISTED), ans
    assert not ans.find(M.AVP_VSAI), ans


# -- (a) arbitrary bytes after a valid CER -----------------------------------------------------

KNOWN_CODES = [1, 33, 257, 258, 260, 263, 264, 268, 277, 278, 279, 283, 284, 293, 296, 297, 1401, 1402, 1403]


@st.composite
def raw_avps(draw: st.DrawFn) -> bytes:
    code = draw(st.sampled_from(KNOWN_CODES) | st.integers(0, 0xFFFFFFFF))
    vendor = draw(st.none() | st.sampled_from([M.VENDOR_3GPP, 0, 99999]))
    flags = draw(st.sampled_from([0, M.AVP_M, 0x20, 0x1F]) | st.integers(0, 255)) & ~M.AVP_V
    data = draw(st.binary(max_size=40) | st.builds(lambda children: b"".join(children), st.lists(
        st.builds(lambda c, d: M.avp(c, d, vendor=M.VENDOR_3GPP), st.sampled_from([1402, 1403, 1]),
                  st.binary(max_size=20)), max_size=3)))  # fmt: skip
    length = draw(st.none() | st.integers(0, 80))
    return M.avp(code, data, vendor=vendor, flags=flags, length=length, padded=draw(st.booleans()))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    flags = draw(st.sampled_from([0x80, 0xC0, 0xA0, 0xE0, 0x00, 0x40, 0xD0]) | st.integers(0, 255))
    command = draw(st.sampled_from([M.CMD_ECR, M.CMD_CER, M.CMD_DWR, M.CMD_DPR]) | st.integers(0, 0xFFFFFF))
    app = draw(st.sampled_from([M.APP_S13, 0, M.APP_RELAY]) | st.integers(0, 0xFFFFFFFF))
    body = b"".join(draw(st.lists(raw_avps(), max_size=6)))
    length = draw(st.none() | st.integers(0, 0xFFFFFF) | st.integers(16, 200))
    version = draw(st.sampled_from([1, 1, 1, 0, 2, 255]))
    return M.message(flags, command, app, [body], version=version, length=length,
                     hbh=draw(st.integers(0, 0xFFFFFFFF)), e2e=draw(st.integers(0, 0xFFFFFFFF)))  # fmt: skip


garbage = st.one_of(
    st.binary(max_size=600),
    messages(),
    st.lists(messages(), min_size=2, max_size=4).map(b"".join),
    st.builds(lambda a, b: a + b, messages(), st.binary(max_size=64)),
)


@given(payload=garbage)
# Found by this test: a request for command 0 (3001) whose Session-Id is not UTF-8.
@example(payload=M.message(M.FLAG_R, 0, 0, [M.avp(M.AVP_SESSION_ID, b"\0" * 10 + b"\x80", flags=0)], hbh=0, e2e=0))
def test_fuzz_arbitrary_bytes_after_cer(server: ServerThread, payload: bytes) -> None:
    run_example(server, payload)


# -- (b) mutations of a valid ECR ------------------------------------------------------------------


def base_ecr() -> bytes:
    proxy = M.grouped(M.AVP_PROXY_INFO, M.utf8(M.AVP_PROXY_HOST, "dra.s13eir.test"), M.avp(M.AVP_PROXY_STATE, b"st"))
    return M.with_avps(M.to_bytes(M.ecr(M.IMEI_GREY, imsi="001010000000001", sv="07", hbh=0x1234, e2e=0x5678)), proxy)


BASE = base_ecr()  # greylisted, with Proxy-Info: the full path
# Whitelisted and plain: what the server's fast path answers, until a mutation makes it decline.
BASE_WHITE = M.to_bytes(M.ecr(M.IMEI_UNLISTED, imsi="001010000000003", sv="07", hbh=0x2345, e2e=0x6789))


def nested(depth: int, code: int, vendor: int | None, flags: int) -> bytes:
    """A grouped AVP ``depth`` levels deep around one leaf."""
    inner = M.utf8(M.AVP_PROXY_HOST, "dra.s13eir.test")
    for _ in range(depth):
        inner = M.grouped(code, inner, vendor=vendor, flags=flags)
    return inner


# Adversarial: nesting around the depth limit (diameter.max_avp_depth, 16) and far past it,
# in the grouped AVPs a server must look into (Proxy-Info, Failed-AVP, Terminal-Information)
# and in unknown ones, with the M-bit set or not.
nesting = st.builds(
    nested,
    st.sampled_from([1, 2, 14, 15, 16, 17, 18, 40, 200]),
    st.sampled_from([M.AVP_PROXY_INFO, M.AVP_FAILED_AVP, 9999, M.AVP_TERMINAL_INFORMATION]),
    st.sampled_from([None, M.VENDOR_3GPP]),
    st.sampled_from([0, M.AVP_M]),
)

structural = st.one_of(
    st.tuples(st.just("dup"), st.integers(0, 20)),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("insert"), st.integers(0, 20), raw_avps()),
    st.tuples(st.just("insert"), st.integers(0, 20), nesting),
)
byte_level = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 8 * len(BASE) - 1)),
    st.tuples(st.just("truncate"), st.integers(0, len(BASE)), st.booleans()),
    st.tuples(st.just("msg_len"), st.integers(0, 0xFFFFFF) | st.integers(len(BASE) - 12, len(BASE) + 12)),
    st.tuples(st.just("avp_len"), st.integers(0, 20), st.integers(0, 0xFFFFFF) | st.integers(0, 64)),
    st.tuples(st.just("inner_len"), st.integers(0, 64)),
    # Adversarial: an AVP length at each boundary (0, below a header, a header, one off
    # either way, to the end of the message and past it), and padding lost or junk.
    st.tuples(st.just("len_edge"), st.integers(0, 20), st.integers(0, 10)),
    st.tuples(st.just("unpad"), st.integers(0, 20), st.integers(1, 3), st.sampled_from([0, 0xFF])),
)


def mutate(ops: list[tuple[Any, ...]], base: bytes = BASE) -> bytes:
    head, avps = M.split(base)
    for op in ops:
        kind = op[0]
        if kind == "dup" and avps:
            i = op[1] % len(avps)
            avps.insert(i + 1, avps[i])
        elif kind == "remove" and avps:
            del avps[op[1] % len(avps)]
        elif kind == "insert":
            avps.insert(op[1] % (len(avps) + 1), pad(op[2]))
    data = bytearray(M.join(head, avps))
    offsets = list(_avp_offsets(bytes(data)))
    for op in ops:
        kind = op[0]
        if kind == "flip" and data:
            bit = op[1] % (8 * len(data))
            data[bit // 8] ^= 0x80 >> (bit % 8)
        elif kind == "truncate":
            del data[op[1] :]
            if op[2] and len(data) >= 4:
                data[1:4] = len(data).to_bytes(3, "big")
        elif kind == "msg_len" and len(data) >= 4:
            data[1:4] = op[1].to_bytes(3, "big")
        elif kind == "avp_len" and offsets:
            at = offsets[op[1] % len(offsets)]
            if at + 8 <= len(data):
                data[at + 5 : at + 8] = op[2].to_bytes(3, "big")
        elif kind == "len_edge" and offsets:
            at = offsets[op[1] % len(offsets)]
            if at + 8 <= len(data):
                length = int.from_bytes(data[at + 5 : at + 8], "big")
                head = 12 if data[at + 4] & M.AVP_V else 8
                edges = [0, 7, 8, head - 1, head, length - 1, length + 1, length + 3, length + 4,
                         len(data) - at, len(data) - at + 1]  # fmt: skip
                data[at + 5 : at + 8] = max(0, edges[op[2] % len(edges)]).to_bytes(3, "big")
        elif kind == "unpad" and offsets:
            at = offsets[op[1] % len(offsets)]
            if at + 8 <= len(data):
                length = int.from_bytes(data[at + 5 : at + 8], "big")
                short = max(0, length - op[2])  # the data ends earlier: its padding holds junk
                data[at + 5 : at + 8] = short.to_bytes(3, "big")
                for i in range(at + short, min(at + ((length + 3) & ~3), len(data))):
                    data[i] = op[3]
        elif kind == "inner_len":
            at = bytes(data).find(struct.pack("!I", M.AVP_IMEI))
            if at >= 0 and at + 8 <= len(data):
                data[at + 5 : at + 8] = op[1].to_bytes(3, "big")
    return bytes(data)


def pad(b: bytes) -> bytes:
    return M.pad4(b)


def _avp_offsets(frame: bytes) -> Iterator[int]:
    pos = 20
    while pos + 8 <= len(frame):
        yield pos
        length = int.from_bytes(frame[pos + 5 : pos + 8], "big")
        if length < 8:
            return
        pos += (length + 3) & ~3


# Found by this test: the top bit of the inner Proxy-Host length flipped (an overrun inside Proxy-Info).
_PROXY_HOST_LENGTH_BIT = 8 * (BASE.index(struct.pack("!I", M.AVP_PROXY_INFO)) + 8 + 5)


@pytest.mark.parametrize("base", [BASE, BASE_WHITE], ids=["full-path", "fast-path"])
@given(ops=st.lists(st.one_of(structural, byte_level), min_size=1, max_size=4))
@example(ops=[("flip", _PROXY_HOST_LENGTH_BIT)])
# Found by this test: a second Proxy-Info without Proxy-Host, holding a 3GPP AVP that is not
# UTF-8 (Wildcarded-PSI 0x80); the 5005 answer echoed it and could not be decoded.
@example(
    ops=[("insert", 0, b"\x00\x00\x01\x1c\x00\x00\x00\x18\x00\x00\x02z\x80\x00\x00\r\x00\x00(\xaf\x80\x00\x00\x00")]
)
def test_fuzz_mutated_ecr(server: ServerThread, base: bytes, ops: list[tuple[Any, ...]]) -> None:
    run_example(server, mutate(ops, base), original_head=base[:20])


@pytest.mark.parametrize(("base", "status"), [(BASE, M.GREYLISTED), (BASE_WHITE, M.WHITELISTED)])
def test_unmutated_base_ecr_is_answered(server: ServerThread, base: bytes, status: int) -> None:
    """The oracle itself: the base ECR is intact and gets one well-formed answer."""
    sent = requests_in(base, base[:20])
    assert [r.intact for r in sent] == [True]
    [answer] = run_example(server, base, original_head=base[:20])
    assert answer.equipment_status == status


# -- (c) mutations of the CER, as the first message of a connection -----------------------------

BASE_CER = M.to_bytes(M.cer(state_id=7, hbh=0x4321, e2e=0x8765))


@given(ops=st.lists(st.one_of(structural, byte_level), min_size=1, max_size=3))
def test_fuzz_mutated_cer(server: ServerThread, ops: list[tuple[Any, ...]]) -> None:
    payload = mutate(ops, BASE_CER)
    answers = run_example(server, payload, original_head=BASE_CER[:20], cer=False)
    # Before the CER only a CEA (or a framing-error answer) may come back, then the close.
    assert all(a.command == M.CMD_CER or a.result_code in (5011, 5015) for a in answers), answers
    if any(a.result_code == 2001 for a in answers):
        cea = answers[0]
        assert 10415 in [a.u32() for a in cea.find(M.AVP_SUPPORTED_VENDOR_ID)]
