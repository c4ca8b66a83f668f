"""Admission control and DOIC (RFC 7683), sans-IO: the controller, the 3004 template
against the generic error answer, and a peer shedding load and reporting overload."""

from __future__ import annotations

import random

import pytest
from diameter.message import Message
from diameter.message.avp import Avp as PdAvp
from hypothesis import given
from hypothesis import strategies as st

from s13eir.diameter import avp as enc
from s13eir.diameter.answers import busy_answer, error_answer
from s13eir.diameter.doic import Reporter, announced
from s13eir.diameter.header import parse_header
from s13eir.diameter.peer import PeerConnection
from s13eir.diameter.screening import lenient_avps
from s13eir.overload import OverloadControl, OverloadSettings
from tests.diameter.test_peer_sansio import LOCAL, cer, ecr, messages, settings

OLR, FEATURES = 623, 621


def control(**kw: object) -> OverloadControl:
    return OverloadControl(OverloadSettings(**kw), 1000)  # type: ignore[arg-type]


# -- the controller --------------------------------------------------------------------


def test_a_sustained_delay_cuts_the_admitted_share_in_proportion() -> None:
    """Multiplicative decrease: to target/delay of the share, between a half and nine
    tenths per sample, so that twice the capacity is met within a sample or two."""
    c = control(delay_s=0.1, sustain=1)
    assert not c.sample(0.0, 0.01, 0, 0) and c.reduction == 0
    assert c.sample(0.1, 0.3, 0, 0)  # three times the target: the floor of the cut, a half
    assert c.reduction == 50 and c.entered == 1 and "queueing delay 300 ms" in c.reason and c.sequence == 1001
    assert c.over and c.delay == pytest.approx(0.3)
    assert not c.sample(0.2, 0.2, 0, 0)  # falling by more than a fifth: draining, no further cut
    assert c.sample(0.3, 0.2, 0, 0) and c.reduction == 75  # not falling: twice the target, halved
    assert not c.sample(0.4, 0.105, 0, 0)  # falling again
    assert c.sample(0.5, 0.105, 0, 0) and c.reduction == 78  # just over: the smallest cut, to 0.9
    c2 = control(delay_s=0.1, sustain=1)
    c2.sample(0.0, 0.125, 0, 0)
    assert c2.reduction == 20  # a quarter over: to four fifths


def test_the_share_comes_back_after_the_hold_faster_and_faster_pausing_below_the_last_cut() -> None:
    c = control(delay_s=0.1, sustain=1, step=2, hold_s=0.5)
    c.sample(0.0, 1.0, 0, 0)
    c.sample(0.1, 1.0, 0, 0)
    assert c.reduction == 75  # halved twice; the ceiling is 0.9 of the 50 before the last cut: 45
    assert not c.sample(0.2, 0.07, 0, 0)  # between half the target and the target: held
    seen = []
    t = 0.3
    while c.reduction and t < 5:
        c.sample(t, 0.01, 0, 0)
        seen.append(c.reduction)
        t = round(t + 0.1, 1)
    # Calm from 0.3 s; after hold_s (0.5 s) the share grows 2, 4, 6, ... points per sample,
    # stopping at the ceiling (45 admitted, 55) and probing past it from one step again.
    assert seen[:5] == [75] * 5
    assert seen[5:9] == [73, 69, 63, 55] and seen[9:12] == [53, 49, 43]
    assert seen[-1] == 0 and c.ended_at is not None and c.reason == "" and c.peak == 75 and not c.over
    # A signal over half its threshold stops the ramp: it starts again from one step.
    c = control(delay_s=0.1, sustain=1, step=2, hold_s=0.0)
    c.sample(0.0, 0.2, 0, 0)
    c.sample(0.1, 0.01, 0, 0)
    c.sample(0.2, 0.01, 0, 0)
    c.sample(0.3, 0.01, 0, 0)
    assert c.reduction == 50 - 2 - 4
    c.sample(0.4, 0.06, 0, 0)
    c.sample(0.5, 0.01, 0, 0)
    c.sample(0.6, 0.01, 0, 0)
    assert c.reduction == 44 - 2


def test_one_stall_alone_is_not_an_overload() -> None:
    """A GC pause or a reload holds the loop once: the backlog drains at full speed, and
    refusing then would refuse what the node can answer. Sustained, it is an overload."""
    c = control(sustain=2)
    for t in range(10):
        assert not c.sample(t * 0.2, 0.5, 0, 0, 0)  # every other sample over: never in a row
        assert not c.sample(t * 0.2 + 0.1, 0.0, 0, 0, 0)
    assert c.reduction == 0 and c.entered == 0
    assert not c.sample(3.0, 0.5, 0, 0, 0) and c.sample(3.1, 0.0, 0, 0, 20 << 20, 1 << 30)  # two in a row
    assert c.reduction == 20 and "waiting to be read" in c.reason


def test_the_delay_counts_what_waits_to_be_read_at_the_rate_the_node_reads() -> None:
    c = control(sustain=1, delay_s=0.1)
    c.sample(0.0, 0.0, 0, 0)
    c.sample(0.1, 0.01, 0, 0, 1_000_000, 500_000)  # 2 intervals of reading wait, plus the lag
    assert c.delay == pytest.approx(0.21) and c.reduction == 50
    c.sample(0.2, 0.0, 0, 0, 1000, 0)  # nothing read in an interval while bytes wait
    assert c.delay == pytest.approx(0.1)
    c.sample(0.3, 0.0, 0, 0, 0, 0, 0.15)  # the oldest lookup has waited 150 ms for the store
    assert c.delay == pytest.approx(0.15) and "queueing delay 150 ms" in c.reason


def test_a_full_receive_window_is_an_overload_the_backlog_cannot_show() -> None:
    """The peer is held back by TCP: its queue is out of sight, the cut is a fifth per sample."""
    c = control(sustain=1)
    assert c.sample(0.0, 0.0, 0, 0, 1000, 10**6, 0.0, True)
    assert c.reduction == 20 and "receive window is full" in c.reason
    c.sample(0.1, 0.0, 0, 0, 1000, 10**6, 0.0, True)
    assert c.reduction == 36
    c.sample(0.2, 0.0, 0, 0, 0, 10**6, 0.0, False)
    assert c.reduction == 36 and not c.over


def test_each_signal_counts_and_the_reduction_is_capped() -> None:
    c = control(in_flight=10, write_buffer=100, input_backlog=1000, max_reduction=90, sustain=1)
    c.sample(0, 0, 11, 0)
    assert "11 requests in flight" in c.reason
    c.sample(0.1, 0, 0, 101)
    assert "101 bytes queued" in c.reason
    c.sample(0.2, 0, 11, 101, 1001, 10**9)
    assert "1001 bytes waiting to be read" in c.reason
    for i in range(20):
        c.sample(0.3 + i / 10, 0, 100, 0)
    assert c.reduction == 90 == c.peak


def test_disabled_never_reduces() -> None:
    c = control(enabled=False)
    assert not c.sample(0, 10.0, 10**6, 10**9) and c.reduction == 0


@given(st.integers(0, 100), st.integers(1, 500))
def test_refuse_sheds_exactly_the_reduction(reduction: int, n: int) -> None:
    c = control()
    c.reduction = reduction
    refused = sum(c.refuse() for _ in range(n * 100))
    assert refused == reduction * n


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        OverloadSettings(validity_s=0)
    with pytest.raises(ValueError):
        OverloadSettings(step=0)


# -- the 3004 template -----------------------------------------------------------------


def _frame(avps: list[bytes], flags: int = 0xC0) -> bytes:
    body = b"".join(avps)
    n = 20 + len(body)
    return bytes([1]) + n.to_bytes(3, "big") + bytes([flags]) + (324).to_bytes(3, "big") + \
        (16777252).to_bytes(4, "big") + b"\0\0\0\x07\0\0\0\x08" + body  # fmt: skip


_SOME_AVPS = st.lists(st.sampled_from([
    enc.utf8(263, "mme.test;1;2"),
    enc.utf8(263, b"\xff\xfe"),
    enc.u32(277, 1),
    enc.utf8(264, "mme.test"),
    enc.grouped(284, [enc.utf8(280, "dra.test"), enc.encode(33, b"st")]),  # Proxy-Info
    enc.grouped(284, [enc.utf8(280, "dra.test")]),  # a malformed one: not echoed
    enc.encode(9999, b"x", flags=0),
    b"\0\0\1\x07\0\0\0\x03",  # a length below 8
    enc.utf8(263, "é"),
    enc.encode(9999, b"\0\0\1\x1c\0\0\0\x08", flags=0),  # Proxy-Info's code inside a value
]), max_size=6)  # fmt: skip


@given(_SOME_AVPS, st.sampled_from([0xC0, 0x80]), st.integers(0, 7))
def test_busy_answer_is_the_generic_error_answer_byte_for_byte(avps: list[bytes], flags: int, cut: int) -> None:
    frame = _frame(avps, flags)
    frame = frame[: len(frame) - cut] if cut < len(frame) - 20 else frame
    origin = LOCAL.origin_avps
    want = error_answer(parse_header(frame), lenient_avps(frame), origin, 3004, message="overloaded")
    assert busy_answer(frame, origin, "overloaded") == want


def test_busy_answer_of_an_ecr_decodes_with_the_e_bit() -> None:
    m = Message.from_bytes(busy_answer(ecr(hbh=90), LOCAL.origin_avps, "overloaded"))
    assert m.header.is_error and not m.header.is_request and m.header.hop_by_hop_identifier == 90
    assert m.result_code == 3004 and m.session_id == "mme.test;1;1"


# -- a peer under overload -------------------------------------------------------------


def with_features(frame: bytes) -> bytes:
    """``frame`` with OC-Supported-Features {OC-Feature-Vector: OLR_DEFAULT_ALGO} appended."""
    f = enc.grouped(621, [enc.encode(622, (1).to_bytes(8, "big"), flags=0)], mandatory=False)
    n = len(frame) + len(f)
    return frame[:1] + n.to_bytes(3, "big") + frame[4:] + f


def overloaded_peer(reduction: int, fast: bool = True) -> tuple[PeerConnection, OverloadControl]:
    s = settings(fast=fast)
    c = control(validity_s=7, sustain=1)
    s.overload, s.doic = c, Reporter(c)
    conn = PeerConnection(s, 0.0, random.Random(1), "127.0.0.1")
    conn.receive_data(cer(), 0.0)
    conn.data_to_send()
    c.reduction = reduction
    c.sequence += 1
    return conn, c


def avp(m: Message, code: int) -> PdAvp | None:
    return next((a for a in m.avps if a.code == code), None)


@pytest.mark.parametrize("fast", [False, True])
def test_an_overloaded_peer_refuses_the_reduction_with_3004(fast: bool) -> None:
    conn, c = overloaded_peer(30, fast)
    conn.receive_data(b"".join(ecr(hbh=100 + i) for i in range(100)), 1.0)
    answers = messages(conn.data_to_send())
    codes = [a.result_code for a in answers]
    assert len(answers) == 100 and codes.count(3004) == 30 and codes.count(2001) == 70
    assert conn.shed == 30 == c.refused
    assert [a.header.hop_by_hop_identifier for a in answers] == list(range(100, 200))
    assert all(avp(a, OLR) is None and avp(a, FEATURES) is None for a in answers)  # no DOIC: none asked


def test_a_doic_peer_gets_reports_and_is_not_refused_below_full_reduction() -> None:
    conn, c = overloaded_peer(40)
    conn.receive_data(b"".join(with_features(ecr(hbh=100 + i)) for i in range(10)), 1.0)
    answers = messages(conn.data_to_send())
    assert [a.result_code for a in answers] == [2001] * 10 and conn.shed == 0
    for a in answers:
        olr = avp(a, OLR)
        assert olr is not None and avp(a, FEATURES) is not None
        inner = {x.code: x.value for x in olr.value}
        assert inner == {624: c.sequence, 626: 0, 627: 40, 625: 7}
        features = {x.code: x.value for x in avp(a, FEATURES).value}  # type: ignore[union-attr]
        assert features == {622: 1}  # the loss algorithm chosen
    c.reduction = 100
    conn.receive_data(b"".join(with_features(ecr(hbh=200 + i)) for i in range(4)), 1.0)
    refused = messages(conn.data_to_send())
    assert [a.result_code for a in refused] == [3004] * 4
    assert all(avp(a, OLR) is not None and avp(a, FEATURES) is not None for a in refused)  # the report too


def test_a_doic_peer_is_refused_its_share_while_the_node_is_still_behind() -> None:
    """What a DOIC peer sent before its first report arrived waits in front of the node:
    while a signal is over its threshold, the peer's requests are refused too (with the
    report), so that the queue drains; once under, the peer's own abatement is enough."""
    conn, c = overloaded_peer(0)
    c.sample(0.0, 0.5, 0, 0)  # sustain=1: halved at once, still over
    assert c.reduction == 50 and c.over
    conn.receive_data(b"".join(with_features(ecr(hbh=100 + i)) for i in range(10)), 1.0)
    answers = messages(conn.data_to_send())
    assert [a.result_code for a in answers].count(3004) == 5 and conn.doic
    assert all(avp(a, OLR) is not None for a in answers)
    c.sample(0.1, 0.08, 0, 0)  # under the threshold: no longer behind
    assert c.reduction == 50 and not c.over
    conn.receive_data(b"".join(with_features(ecr(hbh=200 + i)) for i in range(10)), 1.0)
    assert [a.result_code for a in messages(conn.data_to_send())] == [2001] * 10


def test_the_end_of_an_overload_is_reported_then_only_features() -> None:
    conn, c = overloaded_peer(10)
    c.sample(0.0, 0.0, 0, 0)
    c.sample(c.settings.hold_s + 1, 0.0, 0, 0)  # calm for hold_s: back to 0
    assert c.reduction == 0 and c.ended_at is not None
    conn.receive_data(with_features(ecr(hbh=5)), c.ended_at + 1)
    (a,) = messages(conn.data_to_send())
    olr = avp(a, OLR)
    assert olr is not None and {x.code: x.value for x in olr.value}[625] == 0  # validity 0: ended
    conn.receive_data(with_features(ecr(hbh=6)), c.ended_at + c.settings.validity_s + 1)
    (a,) = messages(conn.data_to_send())
    assert avp(a, OLR) is None and avp(a, FEATURES) is not None


def test_announced_reads_the_feature_vector() -> None:
    from s13eir.diameter.avp import decode_avps

    frame = with_features(ecr())
    assert announced(decode_avps(frame, 20)) == 1
    assert announced(decode_avps(ecr(), 20)) is None
    bare = enc.grouped(621, [], mandatory=False)
    assert announced(decode_avps(bare)) == 1  # no vector: the loss algorithm only (§7.2)


# -- the reacting side (the load generator's MMEs) ---------------------------------------


def test_the_load_generator_reads_the_reports_the_peer_sends() -> None:
    from s13eir.loadgen.wire import AnswerReader

    conn, c = overloaded_peer(60)
    conn.receive_data(with_features(ecr(hbh=7)), 1.0)
    eca = conn.data_to_send()
    reader = AnswerReader()
    assert reader.olr(eca, 0, len(eca)) == (c.sequence, 60, 7)
    assert reader.olr(eca, 0, len(eca)) == (c.sequence, 60, 7)  # the remembered tail says the same
    plain = ecr(hbh=8)
    conn.doic = False
    c.reduction = 0
    conn.receive_data(plain, 1.0)
    eca = conn.data_to_send()
    assert reader.olr(eca, 0, len(eca)) is None


def test_abatement_follows_newer_reports_and_their_validity() -> None:
    from s13eir.loadgen.doic import Abatement

    a = Abatement()
    s = 1_000_000_000
    a.update((5, 40, 2), 0)
    assert sum(a.abate(0) for _ in range(100)) == 40
    a.update((4, 90, 2), 0)  # older: ignored
    assert a.reduction == 40
    assert not any(a.abate(2 * s) for _ in range(10))  # expired
    a.update((6, 70, 10), 3 * s)
    assert a.reduction == 70
    a.update((7, 70, 0), 4 * s)  # validity 0: the overload ended
    assert a.reduction == 0 and not a.abate(4 * s) and a.reports == 3


def test_deferred_answers_to_doic_requests_carry_the_report_too() -> None:
    """An answer that waits for I/O (a Redis confirmation) gets the DOIC AVPs when it is
    delivered, on the fast path and the full path alike; a plain request's does not."""
    from s13eir.diameter.answers import answer as wrap
    from s13eir.diameter.header import parse_header as ph

    class Waiting:
        def handle_request(self, header: object, frame: bytes, avps: object, peer: object) -> object:
            return (frame,)  # a token: the answer comes later

    for fast in (False, True):
        conn, _ = overloaded_peer(0, fast=False)
        app = Waiting()
        conn.settings.applications = {16777252: app}  # type: ignore[dict-item]
        if fast:
            conn._fast = {(16777252).to_bytes(4, "big"): lambda frame, peer: (frame,)}
        conn.receive_data(with_features(ecr(hbh=31)) + ecr(hbh=32), 1.0)
        tokens = conn.take_deferred()
        assert len(tokens) == 2 and conn.in_flight == 2
        for (frame,) in tokens:  # type: ignore[misc]
            conn.deliver(wrap(ph(frame), enc.u32(268, 2001) + LOCAL.origin_avps))
        by_hbh = {m.header.hop_by_hop_identifier: m for m in messages(conn.data_to_send())}
        assert avp(by_hbh[31], FEATURES) is not None and avp(by_hbh[32], FEATURES) is None, fast
