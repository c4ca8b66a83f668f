"""The ECR fast path against the full path: byte-identical answers, or a decline.

Generated ECRs vary the AVP order, padding bytes, extra AVPs (known and unknown,
with and without the M-bit), IMEI forms, User-Name, Proxy-Info and header bits.
"""

from __future__ import annotations

import struct
from typing import TypeVar

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from s13eir.decision.model import UnknownPolicy
from s13eir.decision.policy import Policy
from s13eir.diameter import avp as A
from s13eir.diameter import dictionary
from s13eir.diameter.capx import LocalIdentity, PeerInfo
from s13eir.diameter.header import pack_header, parse_header
from s13eir.diameter.screening import Rejected, Screening, screen
from s13eir.lists.formats import ListSpec, load_lists
from s13eir.s13.application import MeIdentityCheck
from s13eir.s13.eca import AUTH_SESSION_STATE_AVP
from s13eir.s13.fastpath import Layout, scan_ecr
from tests.conftest import SAMPLE_LISTS

D = dictionary.load()
LOCAL = LocalIdentity("eir.test", "test", ("127.0.0.1",))
SNAPSHOT = load_lists(
    [
        ListSpec(str(SAMPLE_LISTS / "blacklist.csv"), "dirbs-blacklist"),
        ListSpec(str(SAMPLE_LISTS / "greylist.csv"), "csv"),
        ListSpec(str(SAMPLE_LISTS / "exceptions.csv"), "dirbs-exceptions"),
        ListSpec(str(SAMPLE_LISTS / "rules.yaml"), "rules-yaml"),
    ]
)
SCREENING = Screening(D, LOCAL.origin_avps, "eir.test", "test", frozenset({16777252}),
                      answer_extras={16777252: AUTH_SESSION_STATE_AVP})  # fmt: skip
PEER = PeerInfo("mme.test", "test", 1, frozenset({16777252}), ("127.0.0.1",))
V = 10415
T = TypeVar("T")

imeis = st.one_of(
    st.sampled_from(["35450712345675", "354507123456750", "35450712345676", "354507123456769"]),
    st.sampled_from(
        [
            "35450712345675",
            "354507123456750",
            "354507123456754",
            "35209900176148",
            "35290611000001",
            "86000012345670",
            "35698700001234",
            "3545071234567X",
            "3545071234567",
            "3545071234567501",
            "٣٥٤٥٠٧١٢٣٤٥٦٧٥",
        ]
    ),
    st.text("0123456789", min_size=13, max_size=16),
)
imsis = st.one_of(st.none(), st.sampled_from(["001010000000001", "001010000000002", "1234", "00101abc"]))


def raw_avp(code: int, data: bytes, vendor: int | None, flags: int, junk_pad: bytes) -> bytes:
    enc = A.encode(code, data, vendor=vendor, flags=flags)
    pad = (-(len(data) + (12 if vendor else 8))) % 4
    return enc[: len(enc) - pad] + junk_pad[:pad].ljust(pad, b"\0") if pad else enc


@st.composite
def ecrs(draw: st.DrawFn) -> bytes:
    # Half the examples are well formed (only order, padding, M-bits, optional AVPs and
    # IMEI forms vary), so the fast path is exercised; the other half perturb them.
    odd = draw(st.booleans())

    def pick(good: list[T], bad: list[T]) -> T:
        return draw(st.sampled_from(good + bad if odd else good))

    junk = draw(st.sampled_from([b"\0\0\0", b"\xff\xfe\xfd"]))
    m = draw(st.sampled_from([0x40, 0x00]))  # M-bit as sent (3GPP relaxation: accepted either way)
    ti_inner = []
    if draw(st.booleans()) or True:
        imei = draw(imeis) if odd else pick(["35450712345675", "354507123456750", "35450712345676"], [])
        ti_inner.append(raw_avp(1402, str(imei).encode(), V, 0xC0 & (0x80 | m), junk))
    if draw(st.booleans()):
        ti_inner.append(raw_avp(1403, pick([b"01", b"7"], [b"\xff1"]), V, 0xC0, junk))
    if odd and draw(st.booleans()):
        ti_inner.append(raw_avp(1471, b"\x01" * 7, V, 0xC0, junk))
    ti_inner = draw(st.permutations(ti_inner))
    avps = [
        raw_avp(263, pick([b"mme.test;1;2", b"x", b""], ["é;1".encode()]), None, m, junk),
        raw_avp(277, struct.pack("!I", pick([1, 0], [7])), None, m, junk),
        raw_avp(264, b"mme.test", None, m, junk),
        raw_avp(296, b"test", None, m, junk),
        raw_avp(283, pick([b"test", b"other"], [b""]), None, m, junk),
        raw_avp(1401, b"".join(ti_inner), V, 0xC0, junk),
    ]
    if (imsi := pick([None, "001010000000002", "1234", "001010123456789"], ["00101abc"])) is not None:
        avps.append(raw_avp(1, str(imsi).encode(), None, m, junk))
    extras = (
        []
        if draw(st.integers(0, 2))
        else draw(
            st.lists(
                st.sampled_from(
                    [
                        raw_avp(293, b"eir.test", None, 0x40, junk),
                        raw_avp(293, b"other.test", None, 0x40, junk),
                        A.grouped(284, [A.utf8(280, "dra.test"), A.encode(33, b"st")]),
                        A.utf8(282, "dra.test"),
                        A.u32(301, 3, mandatory=False),
                        A.grouped(260, [A.u32(266, V), A.u32(258, 16777252)]),
                        A.u32(9999, 1, mandatory=False),
                        A.u32(9999, 1),
                        A.u32(9998, 1, vendor=V),
                        raw_avp(264, b"mme2.test", None, 0x40, junk),
                        raw_avp(1401, b"", V, 0xC0, junk),
                        # RFC 7683 OC-Supported-Features: canonical (taken), or not (declined)
                        A.grouped(621, [A.encode(622, struct.pack("!Q", 1), flags=0)], mandatory=False),
                        A.grouped(621, [A.encode(622, struct.pack("!Q", 3), flags=0x40)]),
                        A.grouped(621, [], mandatory=False),
                        A.grouped(621, [A.u32(622, 1, mandatory=False)], mandatory=False),
                        A.grouped(621, [A.u32(9999, 1)], mandatory=False),
                        A.grouped(621, [A.encode(622, struct.pack("!Q", 1), vendor=V)], mandatory=False),
                    ]
                ),
                max_size=2,
            )
        )
    )
    body = b"".join(draw(st.permutations(avps + extras)))
    if odd and draw(st.integers(0, 3)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
        body += b"\0" * (-len(body) % 4)
    flags = pick([0xC0, 0xD0, 0xC1], [0x80, 0xE0])
    return pack_header(20 + len(body), flags, 324, 16777252, 0x1234, 0x5678) + body


def full_path(app: MeIdentityCheck, frame: bytes) -> bytes:
    header = parse_header(frame)
    screened = screen(header, frame, SCREENING)
    if isinstance(screened, Rejected):
        return screened.answer
    return app.handle_request(header, frame, screened[1], PEER)


@given(ecrs(), st.sampled_from(list(UnknownPolicy)))
def test_fast_path_matches_full_path_or_declines(frame: bytes, policy: UnknownPolicy) -> None:
    seen_fast: list[object] = []
    seen_full: list[object] = []
    app = MeIdentityCheck(LOCAL, SNAPSHOT, Policy(unknown_imei=policy), lambda o, p: seen_fast.append(o))
    full_app = MeIdentityCheck(LOCAL, SNAPSHOT, Policy(unknown_imei=policy), lambda o, p: seen_full.append(o))
    fast = app.fast_answer(frame, PEER)
    if fast is not None:
        event("fast path took it")
        assert fast == full_path(full_app, frame)
        # The same outcome is reported (logs, metrics, sightings), except for whitelisted
        # answers, which the fast path only counts.
        assert seen_fast == [o for o in seen_full if getattr(o.verdict, "status", None) != 0]  # type: ignore[attr-defined]
    else:
        event("fast path declined")


def test_fast_path_takes_the_common_ecr() -> None:
    """Not a path that always declines: a plain ECR for a phone on no list is taken."""
    app = MeIdentityCheck(LOCAL, SNAPSHOT, Policy())
    for imei, imsi in (("35450712345675", None), ("354507123456750", "001010123456789")):
        ti = A.grouped(1401, [A.utf8(1402, imei, vendor=V), A.utf8(1403, "01", vendor=V)], vendor=V)
        avps = [A.utf8(263, "mme.test;1;1"), A.u32(277, 1), A.utf8(264, "mme.test"), A.utf8(296, "test"),
                A.utf8(283, "test"), ti] + ([A.utf8(1, imsi)] if imsi else [])  # fmt: skip
        body = b"".join(avps)
        frame = pack_header(20 + len(body), 0xC0, 324, 16777252, 1, 2) + body
        fast = app.fast_answer(frame, PEER)
        assert fast is not None and fast == full_path(app, frame)
    # Listed phones too: the same answer as the full path (which reads the query and logs it).
    ti = A.grouped(1401, [A.utf8(1402, "35209900176148", vendor=V)], vendor=V)
    body = b"".join(
        [A.utf8(263, "s"), A.u32(277, 1), A.utf8(264, "mme.test"), A.utf8(296, "test"), A.utf8(283, "test"), ti]
    )
    frame = pack_header(20 + len(body), 0xC0, 324, 16777252, 1, 2) + body
    listed = app.fast_answer(frame, PEER)
    assert isinstance(listed, bytes) and listed == full_path(app, frame)
    # An MME speaking DOIC (RFC 7683): its OC-Supported-Features does not cost the full path.
    doic = A.grouped(621, [A.encode(622, struct.pack("!Q", 1), flags=0)], mandatory=False)
    frame = pack_header(20 + len(body) + len(doic), 0xC0, 324, 16777252, 1, 2) + body + doic
    taken = app.fast_answer(frame, PEER)
    assert isinstance(taken, bytes) and taken == full_path(app, frame)
    second = app.fast_answer(frame, PEER)  # through the layout learnt
    assert second == taken


@settings(max_examples=300)  # half the frames are declined by the scanner before the layout is tried
@given(ecrs(), st.data())
def test_layout_reads_what_the_scanner_reads(frame: bytes, data: st.DataObject) -> None:
    """A learned layout either declines a frame or reads exactly what ``scan_ecr`` reads,
    and the answers built from it are the full path's. The second frame is the first with
    a few bytes changed: inside the four variable values (the layout should still match),
    or anywhere (header, AVP lengths, padding, flags: it should decline or agree)."""
    first = scan_ecr(frame)
    assume(first is not None)
    assert first is not None
    layout = Layout(frame, first)
    assert layout.match(frame) == first
    spans = [(a, b) for a, b in zip(first.spans[::2], first.spans[1::2], strict=True) if 0 <= a < b]
    other = bytearray(frame)
    anywhere = not spans or data.draw(st.booleans())
    for _ in range(data.draw(st.integers(1, 4))):
        if anywhere:  # after version and length, which framing has checked before any application sees them
            other[data.draw(st.integers(4, len(frame) - 1))] = data.draw(st.integers(0, 255))
        else:
            a, b = data.draw(st.sampled_from(spans))
            value = st.sampled_from(b"0123456789") if data.draw(st.integers(0, 4)) else st.sampled_from(b"aZ;\x80\xff")
            other[data.draw(st.integers(a, b - 1))] = data.draw(value)
    second = bytes(other)
    got = layout.match(second)
    if got is None:
        event("layout declined")
    else:
        event("layout matched")
        assert got == scan_ecr(second)
    # Through the application: the first ECR teaches the layout, the second uses it.
    seen: list[object] = []
    app = MeIdentityCheck(LOCAL, SNAPSHOT, Policy(), lambda o, p: seen.append(o))
    app.fast_answer(frame, PEER)
    fast = app.fast_answer(second, PEER)
    if fast is not None:
        assert fast == full_path(MeIdentityCheck(LOCAL, SNAPSHOT, Policy()), second)
