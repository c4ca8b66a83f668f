"""The initiator (MME) side of the peer state machine, in virtual time, without sockets.

Each test quotes the RFC 6733 §5.6 row it exercises (the I- side). The last ones wire
the initiator to the node's own responder (``PeerConnection``), both sans-IO, and run a
whole session between them; its messages are read with python-diameter throughout.
"""

from __future__ import annotations

import random

from diameter.message import Message
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    CapabilitiesExchangeRequest,
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
    MeIdentityCheckAnswer,
)
from hypothesis import given
from hypothesis import strategies as st

from s13eir.client import PythonDiameterMessages
from s13eir.diameter.header import parse_header
from s13eir.diameter.initiator import (
    AnswerReceived,
    CapabilitiesExchanged,
    CapabilitiesRefused,
    Disconnected,
    DisconnectRequested,
    Failed,
    InitiatorConnection,
    InitiatorEvent,
    InitiatorState,
    Messages,
    RequestReceived,
)
from s13eir.diameter.peer import PeerConnection, PeerState
from tests.diameter.test_peer_sansio import ecr, messages, settings

MME = Messages("mme.test", "test", 1234)


def events(conn: InitiatorConnection) -> list[InitiatorEvent]:
    out = []
    while (e := conn.next_event()) is not None:
        out.append(e)
    return out


def cea(result_code: int = 2001, hbh: int = 11, e2e: int = 12, error: str | None = None) -> bytes:
    m = CapabilitiesExchangeAnswer()
    m.header.hop_by_hop_identifier, m.header.end_to_end_identifier = hbh, e2e
    m.result_code = result_code
    m.origin_host, m.origin_realm = b"eir.test", b"eir.realm"
    m.host_ip_address = ["127.0.0.1"]
    m.vendor_id = 0
    m.product_name = "eir"
    if error is not None:
        m.error_message = error
    return bytes(m.as_bytes())


def started(now: float = 0.0) -> InitiatorConnection:
    conn = InitiatorConnection(MME, MME.cer("127.0.0.1", 11, 12), now, cea_timeout=10.0, dpa_timeout=5.0)
    (cer,) = messages(conn.data_to_send())
    assert isinstance(cer, CapabilitiesExchangeRequest) and cer.header.hop_by_hop_identifier == 11
    return conn


def opened(now: float = 0.0) -> InitiatorConnection:
    conn = started(now)
    conn.receive_data(cea(), now + 0.1)
    assert [type(e) for e in events(conn)] == [CapabilitiesExchanged]
    return conn


def request(cls: type[Message], hbh: int, **avps: object) -> bytes:
    m = cls()
    m.header.hop_by_hop_identifier, m.header.end_to_end_identifier = hbh, (hbh + 1) & 0xFFFFFFFF
    m.origin_host, m.origin_realm = b"eir.test", b"eir.realm"
    for name, value in avps.items():
        setattr(m, name, value)
    return bytes(m.as_bytes())


def test_wait_i_cea_rcv_cea_opens() -> None:
    # Wait-I-CEA  I-Rcv-CEA  Process-CEA  I-Open
    conn = started()
    assert conn.state is InitiatorState.WAIT_CEA and conn.get_timer() == 10.0
    conn.receive_data(cea(), 0.5)
    (opened_,) = events(conn)
    assert isinstance(opened_, CapabilitiesExchanged)
    assert (opened_.origin_host, opened_.origin_realm) == ("eir.test", "eir.realm")
    assert conn.state is InitiatorState.OPEN and conn.get_timer() is None and not conn.should_close


def test_refused_cea_closes_with_its_code_and_message() -> None:
    conn = started()
    conn.receive_data(cea(3010, error="unknown peer"), 0.5)
    (refused,) = events(conn)
    assert isinstance(refused, CapabilitiesRefused)
    assert (refused.result_code, refused.error_message) == (3010, "unknown peer")
    assert conn.should_close and conn.state is InitiatorState.CLOSED


def test_a_cea_to_another_cer_is_discarded() -> None:
    conn = started()
    conn.receive_data(cea(hbh=99), 0.5)
    assert events(conn) == [] and conn.discarded == 1 and conn.state is InitiatorState.WAIT_CEA


def test_no_cea_in_time_fails() -> None:
    # Wait-I-CEA  Timeout  Error  Closed
    conn = started()
    conn.handle_timer(9.9)
    assert not conn.should_close
    conn.handle_timer(10.0)
    (failed,) = events(conn)
    assert isinstance(failed, Failed) and "CEA" in failed.reason and conn.should_close


def test_i_open_rcv_dwr_answers_dwa() -> None:
    # I-Open  I-Rcv-DWR  Process-DWR, I-Snd-DWA  I-Open
    conn = opened()
    conn.receive_data(request(DeviceWatchdogRequest, 40, origin_state_id=9), 1.0)
    (dwa,) = messages(conn.data_to_send())
    assert isinstance(dwa, DeviceWatchdogAnswer)
    assert (dwa.header.hop_by_hop_identifier, dwa.header.end_to_end_identifier) == (40, 41)
    assert dwa.result_code == 2001 and dwa.origin_state_id == 1234 and dwa.origin_host == b"mme.test"
    assert events(conn) == [] and conn.watchdogs_answered == 1 and conn.state is InitiatorState.OPEN


def test_i_open_rcv_dpr_answers_dpa_and_closes() -> None:
    # I-Open  I-Rcv-DPR  I-Snd-DPA, I-Disc  Closed
    conn = opened()
    conn.receive_data(request(DisconnectPeerRequest, 50, disconnect_cause=0), 1.0)
    (dpa,) = messages(conn.data_to_send())
    assert isinstance(dpa, DisconnectPeerAnswer) and dpa.header.hop_by_hop_identifier == 50
    assert events(conn) == [DisconnectRequested(0)] and conn.should_close


def test_disconnect_sends_dpr_and_closes_on_its_dpa() -> None:
    # I-Open  Stop  I-Snd-DPR  Closing;  Closing  I-Rcv-DPA  I-Disc  Closed
    conn = opened()
    conn.disconnect(2, 3.0, 70, 71)
    (dpr,) = messages(conn.data_to_send())
    assert isinstance(dpr, DisconnectPeerRequest) and dpr.disconnect_cause == 2
    assert conn.state is InitiatorState.CLOSING and conn.get_timer() == 8.0
    conn.receive_data(request(DisconnectPeerAnswer, 69, result_code=2001), 3.1)  # not ours
    assert conn.discarded == 1 and not conn.should_close
    answer = DisconnectPeerAnswer()
    answer.header.hop_by_hop_identifier, answer.header.end_to_end_identifier = 70, 71
    answer.result_code, answer.origin_host, answer.origin_realm = 2001, b"eir.test", b"eir.realm"
    conn.receive_data(answer.as_bytes(), 3.2)
    assert events(conn) == [Disconnected()] and conn.should_close


def test_no_dpa_in_time_fails() -> None:
    # Closing  Timeout  Error  Closed
    conn = opened()
    conn.disconnect(0, 3.0, 70, 71)
    conn.handle_timer(conn.get_timer() or 0)
    (failed,) = events(conn)
    assert isinstance(failed, Failed) and "DPA" in failed.reason and conn.should_close


def test_disconnect_before_the_cea_just_closes() -> None:
    conn = started()
    conn.disconnect(0, 1.0, 70, 71)
    assert conn.data_to_send() == b"" and conn.should_close


def test_application_answers_and_requests_pass_through() -> None:
    conn = opened()
    eca = MeIdentityCheckAnswer()
    eca.header.application_id, eca.header.hop_by_hop_identifier = 16777252, 80
    eca.result_code = 2001
    frame = bytes(eca.as_bytes())
    conn.receive_data(frame[:7], 1.0)
    assert events(conn) == []  # framing: half a header is nothing yet
    conn.receive_data(frame[7:] + ecr(hbh=90), 1.0)
    answer, req = events(conn)
    assert isinstance(answer, AnswerReceived) and answer.frame == frame and answer.header.hop_by_hop == 80
    assert isinstance(req, RequestReceived) and req.header.hop_by_hop == 90


def test_an_unframable_stream_fails() -> None:
    conn = opened()
    conn.receive_data(b"\x02" + b"\0" * 19, 1.0)
    (failed,) = events(conn)
    assert isinstance(failed, Failed) and conn.should_close


@given(
    host=st.from_regex(r"[a-z][a-z0-9.-]{0,40}", fullmatch=True),
    state_id=st.integers(0, 2**32 - 1),
    ids=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    cause=st.sampled_from([0, 1, 2]),
)
def test_our_base_messages_read_the_same_as_python_diameters(
    host: str, state_id: int, ids: tuple[int, int], cause: int
) -> None:
    ours, theirs = Messages(host, "realm.test", state_id), PythonDiameterMessages(host, "realm.test", state_id)
    dwr = Message.from_bytes(request(DeviceWatchdogRequest, ids[0]))
    dpr = Message.from_bytes(request(DisconnectPeerRequest, ids[0]))
    for mine, other in (
        (ours.dwa(parse_header(dwr.as_bytes())), theirs.dwa(parse_header(dwr.as_bytes()))),
        (ours.dpa(parse_header(dpr.as_bytes())), theirs.dpa(parse_header(dpr.as_bytes()))),
        (ours.dpr(cause, *ids), theirs.dpr(cause, *ids)),
    ):
        a, b = Message.from_bytes(mine), Message.from_bytes(other)
        assert type(a) is type(b) and a.header.is_request == b.header.is_request
        assert (a.header.hop_by_hop_identifier, a.header.end_to_end_identifier) == (
            b.header.hop_by_hop_identifier,
            b.header.end_to_end_identifier,
        )
        assert sorted((x.code, x.value) for x in a.avps) == sorted((x.code, x.value) for x in b.avps)
    cer = Message.from_bytes(ours.cer("10.0.0.1", *ids))
    assert isinstance(cer, CapabilitiesExchangeRequest)
    assert cer.origin_host == host.encode() and cer.origin_state_id == state_id
    assert cer.vendor_specific_application_id[0].auth_application_id == 16777252


def pump(mme: InitiatorConnection, eir: PeerConnection, now: float) -> None:
    """Carry bytes both ways until neither side has anything to send."""
    while True:
        a, b = mme.data_to_send(), eir.data_to_send()
        if not a and not b:
            return
        if a:
            eir.receive_data(a, now)
        if b:
            mme.receive_data(b, now)


def watchdog_fires(mme: InitiatorConnection, eir: PeerConnection) -> None:
    """Run the responder's timer until its DWR is answered (traffic since re-arms it first)."""
    answered = mme.watchdogs_answered
    for _ in range(3):
        t = eir.get_timer()
        assert t is not None
        eir.handle_timer(t)
        pump(mme, eir, t)
        if mme.watchdogs_answered > answered:
            return
    raise AssertionError("the responder sent no DWR")


def test_a_whole_session_against_the_nodes_responder() -> None:
    """CER/CEA, an ECR, the responder's watchdog answered by the initiator, then our
    DPR: each side's state machine drives the other, in virtual time."""
    eir = PeerConnection(settings(), 0.0, random.Random(1), "127.0.0.1")
    mme = InitiatorConnection(MME, Messages("mme.test", "test", 1).cer("127.0.0.1", 11, 12), 0.0)
    pump(mme, eir, 0.0)
    (opened_,) = events(mme)
    assert isinstance(opened_, CapabilitiesExchanged) and opened_.origin_host == "eir.test"
    assert eir.state is PeerState.OPEN
    mme_ecr = ecr(hbh=300)
    eir.receive_data(mme_ecr, 1.0)
    mme.receive_data(eir.data_to_send(), 1.0)
    (answer,) = events(mme)
    assert isinstance(answer, AnswerReceived) and Message.from_bytes(answer.frame).result_code == 2001
    watchdog_fires(mme, eir)  # the responder's Tw: a DWR, answered by the initiator core
    assert mme.watchdogs_answered == 1 and not eir.should_close
    watchdog_fires(mme, eir)  # and the next: the watchdog stayed OKAY, or it would close now
    assert mme.watchdogs_answered == 2 and not eir.should_close
    now = eir.get_timer() or 0.0
    mme.disconnect(0, now, 400, 401)
    pump(mme, eir, now)
    assert events(mme) == [Disconnected()] and mme.should_close and eir.should_close


def test_the_nodes_dpr_is_answered_and_closes_both() -> None:
    eir = PeerConnection(settings(), 0.0, random.Random(1), "127.0.0.1")
    mme = InitiatorConnection(MME, Messages("mme.test", "test", 1).cer("127.0.0.1", 11, 12), 0.0)
    pump(mme, eir, 0.0)
    events(mme)
    eir.stop(5.0, cause=0)
    pump(mme, eir, 5.0)
    assert events(mme) == [DisconnectRequested(0)]
    assert mme.should_close and eir.should_close
