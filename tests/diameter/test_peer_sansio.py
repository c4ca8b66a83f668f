"""The peer state machine and watchdog driven in virtual time, without sockets.

Each test quotes the RFC 6733 §5.6 / RFC 3539 row it exercises.
"""

from __future__ import annotations

import random

import pytest
from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
    MeIdentityCheckRequest,
)

from s13eir.decision.policy import Policy
from s13eir.diameter import dictionary
from s13eir.diameter.capx import LocalIdentity, PeerEntry, PeerPolicy
from s13eir.diameter.events import PeerClosed, PeerOpened, PeerRejected, WatchdogChanged
from s13eir.diameter.framing import FrameBuffer
from s13eir.diameter.peer import PeerConnection, PeerRegistry, PeerSettings, PeerState
from s13eir.diameter.screening import Screening
from s13eir.diameter.watchdog import Watchdog, WatchdogAction, WatchdogState
from s13eir.lists.snapshot import ListSnapshot
from s13eir.s13.application import MeIdentityCheck
from s13eir.s13.eca import AUTH_SESSION_STATE_AVP

D = dictionary.load()
LOCAL = LocalIdentity("eir.test", "test", ("127.0.0.1",), origin_state_id=7)


def settings(registry: PeerRegistry | None = None, allow_unknown: bool = False, fast: bool = False) -> PeerSettings:
    app = MeIdentityCheck(LOCAL, ListSnapshot.empty(), Policy())
    return PeerSettings(
        local=LOCAL,
        policy=PeerPolicy.of([PeerEntry("mme.test", "test")], allow_unknown),
        screening=Screening(
            D,
            LOCAL.origin_avps,
            LOCAL.origin_host,
            LOCAL.origin_realm,
            frozenset({16777252}),
            answer_extras={16777252: AUTH_SESSION_STATE_AVP},
        ),
        applications={16777252: app},
        registry=registry if registry is not None else PeerRegistry(),
        watchdog_interval=30.0,
        fast_paths={16777252: app.fast_answer} if fast else {},
    )


def cer(host: str = "mme.test", state_id: int = 1, apps: tuple[int, ...] = (16777252,)) -> bytes:
    m = CapabilitiesExchangeRequest()
    m.header.hop_by_hop_identifier = 11
    m.header.end_to_end_identifier = 12
    m.origin_host = host.encode()
    m.origin_realm = b"test"
    m.host_ip_address = ["127.0.0.1"]
    m.vendor_id = 0
    m.product_name = "test"
    m.origin_state_id = state_id
    m.vendor_specific_application_id = [
        VendorSpecificApplicationId(vendor_id=10415, auth_application_id=a) for a in apps
    ]
    return bytes(m.as_bytes())


def ecr(imei: str = "35450712345675", hbh: int = 21) -> bytes:
    m = MeIdentityCheckRequest()
    m.header.application_id = 16777252
    m.header.hop_by_hop_identifier = hbh
    m.header.end_to_end_identifier = hbh + 1
    m.session_id = "mme.test;1;1"
    m.auth_session_state = 1
    m.origin_host = b"mme.test"
    m.origin_realm = b"test"
    m.destination_realm = b"test"
    m.terminal_information = TerminalInformation(imei=imei, software_version="01")
    return bytes(m.as_bytes())


def messages(data: bytes) -> list[Message]:
    buf = FrameBuffer()
    buf.feed(data)
    out = []
    while (f := buf.next_frame()) is not None:
        assert isinstance(f, bytes)
        out.append(Message.from_bytes(f))
    return out


def events(conn: PeerConnection) -> list[object]:
    out = []
    while (e := conn.next_event()) is not None:
        out.append(e)
    return out


def opened(now: float = 0.0, s: PeerSettings | None = None) -> PeerConnection:
    conn = PeerConnection(s or settings(), now, random.Random(1), "127.0.0.1")
    conn.receive_data(cer(), now)
    (cea,) = messages(conn.data_to_send())
    assert cea.result_code == 2001
    assert conn.state is PeerState.OPEN
    events(conn)
    return conn


def test_closed_r_conn_cer_opens() -> None:
    # Closed  R-Conn-CER  R-Accept, Process-CER, R-Snd-CEA  R-Open
    conn = PeerConnection(settings(), 0.0, random.Random(1), "127.0.0.1")
    conn.receive_data(cer(), 0.0)
    (cea,) = messages(conn.data_to_send())
    assert cea.result_code == 2001 and cea.header.hop_by_hop_identifier == 11
    assert cea.origin_state_id == 7 and cea.supported_vendor_id == [10415]
    vsai = cea.vendor_specific_application_id[0]
    assert (vsai.vendor_id, vsai.auth_application_id) == (10415, 16777252)
    assert isinstance(events(conn)[0], PeerOpened)


def test_request_before_cer_closes_without_answer() -> None:
    conn = PeerConnection(settings(), 0.0, random.Random(1))
    conn.receive_data(ecr(), 0.0)
    assert conn.data_to_send() == b""
    assert conn.should_close and conn.state is PeerState.CLOSED
    assert isinstance(events(conn)[0], PeerRejected)


def test_no_cer_in_time_closes() -> None:
    conn = PeerConnection(settings(), 0.0, random.Random(1))
    deadline = conn.get_timer()
    assert deadline == 10.0
    conn.handle_timer(deadline)
    assert conn.should_close


def test_unknown_peer_3010_with_e_bit_and_close() -> None:
    conn = PeerConnection(settings(), 0.0, random.Random(1))
    conn.receive_data(cer(host="stranger.test"), 0.0)
    (cea,) = messages(conn.data_to_send())
    assert cea.result_code == 3010 and cea.header.is_error
    assert conn.should_close


def test_allow_unknown_peer() -> None:
    conn = PeerConnection(settings(allow_unknown=True), 0.0, random.Random(1))
    conn.receive_data(cer(host="stranger.test"), 0.0)
    assert messages(conn.data_to_send())[0].result_code == 2001


def test_no_common_application_5010() -> None:
    conn = PeerConnection(settings(), 0.0, random.Random(1))
    conn.receive_data(cer(apps=(16777251,)), 0.0)  # S6a only
    (cea,) = messages(conn.data_to_send())
    assert cea.result_code == 5010 and not cea.header.is_error and conn.should_close


def test_relay_counts_as_common() -> None:
    conn = PeerConnection(settings(), 0.0, random.Random(1))
    conn.receive_data(cer(apps=(0xFFFFFFFF,)), 0.0)
    assert messages(conn.data_to_send())[0].result_code == 2001


def test_open_r_rcv_dwr_answers_dwa() -> None:
    # R-Open  R-Rcv-DWR  Process-DWR, R-Snd-DWA  R-Open
    conn = opened()
    dwr = DeviceWatchdogRequest()
    dwr.origin_host, dwr.origin_realm = b"mme.test", b"test"
    dwr.header.hop_by_hop_identifier = 99
    conn.receive_data(dwr.as_bytes(), 1.0)
    (dwa,) = messages(conn.data_to_send())
    assert isinstance(dwa, DeviceWatchdogAnswer) and dwa.result_code == 2001 and dwa.header.hop_by_hop_identifier == 99
    assert conn.state is PeerState.OPEN


def test_open_r_rcv_dpr_answers_dpa_and_closes() -> None:
    # R-Open  R-Rcv-DPR  R-Snd-DPA  Closing (the DPR sender closes; we close after the DPA)
    conn = opened()
    dpr = DisconnectPeerRequest()
    dpr.origin_host, dpr.origin_realm, dpr.disconnect_cause = b"mme.test", b"test", 0
    conn.receive_data(dpr.as_bytes(), 1.0)
    (dpa,) = messages(conn.data_to_send())
    assert isinstance(dpa, DisconnectPeerAnswer) and dpa.result_code == 2001
    assert conn.should_close


@pytest.mark.parametrize("fast", [False, True])
def test_nothing_after_dpr_in_the_same_read_is_answered(fast: bool) -> None:
    # The connection goes down with the DPA: requests read after the DPR get no answer.
    conn = opened(s=settings(fast=fast))
    dpr = DisconnectPeerRequest()
    dpr.origin_host, dpr.origin_realm, dpr.disconnect_cause = b"mme.test", b"test", 0
    conn.receive_data(ecr(hbh=5) + dpr.as_bytes() + ecr(hbh=6), 1.0)
    eca, dpa = messages(conn.data_to_send())
    assert eca.header.hop_by_hop_identifier == 5 and isinstance(dpa, DisconnectPeerAnswer)
    assert conn.should_close


def test_stop_sends_dpr_and_closes_on_dpa_or_timeout() -> None:
    # R-Open  Stop  R-Snd-DPR  Closing;  Closing  R-Rcv-DPA  R-Disc  Closed
    conn = opened()
    conn.stop(5.0)
    (dpr,) = messages(conn.data_to_send())
    assert isinstance(dpr, DisconnectPeerRequest) and dpr.disconnect_cause == 0
    assert conn.state is PeerState.CLOSING
    conn.receive_data(ecr(hbh=77), 5.1)
    # A request in transit when the DPR left is answered, not dropped.
    (eca,) = messages(conn.data_to_send())
    assert eca.header.hop_by_hop_identifier == 77 and eca.result_code == 2001
    assert conn.state is PeerState.CLOSING
    dpa = DisconnectPeerAnswer()
    dpa.header.hop_by_hop_identifier = dpr.header.hop_by_hop_identifier
    dpa.result_code, dpa.origin_host, dpa.origin_realm = 2001, b"mme.test", b"test"
    conn.receive_data(dpa.as_bytes(), 5.2)
    assert conn.should_close
    # Closing  Timeout  Error  Closed
    conn2 = opened()
    conn2.stop(5.0)
    conn2.data_to_send()
    conn2.handle_timer(conn2.get_timer() or 0)
    assert conn2.should_close


def test_watchdog_dwr_after_tw_then_close_when_unanswered() -> None:
    conn = opened(0.0)
    t = conn.get_timer()
    assert t is not None and 28.0 <= t <= 32.0  # Tw = 30 s ± 2 s jitter
    conn.handle_timer(t)
    (dwr,) = messages(conn.data_to_send())
    assert isinstance(dwr, DeviceWatchdogRequest)
    t2 = conn.get_timer()
    assert t2 is not None and t2 > t
    conn.handle_timer(t2)  # OKAY, timer expires & pending -> SUSPECT
    assert any(isinstance(e, WatchdogChanged) and e.state == "suspect" for e in events(conn))
    assert not conn.should_close
    conn.handle_timer(conn.get_timer() or 0)  # SUSPECT, timer expires -> CloseConnection, DOWN
    assert conn.should_close
    assert any(isinstance(e, PeerClosed) for e in events(conn))


@pytest.mark.parametrize("fast", [False, True], ids=["full-path", "fast-path"])
def test_watchdog_traffic_resets_timer(fast: bool) -> None:
    s = settings(fast=fast)
    conn = opened(0.0, s)
    first = conn.get_timer()
    assert first is not None
    conn.receive_data(ecr(), 20.0)
    assert messages(conn.data_to_send())[0].result_code == 2001
    app = s.applications[16777252]
    assert isinstance(app, MeIdentityCheck) and app.whitelisted_fast == (1 if fast else 0)
    # SetWatchdog() on any received message, applied when the old deadline comes:
    # no DWR then, and the new deadline counts from the last message.
    conn.handle_timer(first)
    assert conn.data_to_send() == b""
    t = conn.get_timer()
    assert t is not None and 48.0 <= t <= 52.0


@pytest.mark.parametrize("fast", [False, True], ids=["full-path", "fast-path"])
def test_request_returns_suspect_to_okay(fast: bool) -> None:
    """SUSPECT, Receive non-DWA: Failback(), SetWatchdog() -> OKAY (RFC 3539), also when a
    fast path answers the request."""
    conn = opened(0.0, settings(fast=fast))
    t1 = conn.get_timer() or 0
    conn.handle_timer(t1)  # OKAY, timer expires -> DWR, pending
    assert messages(conn.data_to_send())[0].header.command_code == 280
    conn.handle_timer(conn.get_timer() or 0)  # pending -> SUSPECT
    assert any(isinstance(e, WatchdogChanged) and e.state == "suspect" for e in events(conn))
    now = (conn.get_timer() or 0) - 1.0
    conn.receive_data(ecr(), now)
    assert messages(conn.data_to_send())[0].result_code == 2001
    t = conn.get_timer()
    assert t is not None and now + 28.0 <= t <= now + 32.0  # a fresh Tw from this message
    assert not conn.should_close


def test_dwa_returns_suspect_to_okay() -> None:
    wd = Watchdog(30, random.Random(3), 0.0)
    assert wd.on_timer(wd.deadline) is WatchdogAction.SEND_DWR
    assert wd.on_timer(wd.deadline) is WatchdogAction.NONE and wd.state is WatchdogState.SUSPECT
    wd.on_message(100.0, is_dwa=True)
    assert wd.state is WatchdogState.OKAY and not wd.pending
    assert Watchdog(1, random.Random(3), 0.0).tw == 6.0  # RFC 3539 floor


def test_second_connection_same_state_id_rejected_new_state_id_replaces() -> None:
    reg = PeerRegistry()
    s = settings(reg)
    first = opened(0.0, s)
    second = PeerConnection(s, 1.0, random.Random(2))
    second.receive_data(cer(state_id=1), 1.0)
    assert messages(second.data_to_send())[0].result_code == 5012 and second.should_close
    third = PeerConnection(s, 2.0, random.Random(3), owner="third")
    third.receive_data(cer(state_id=2), 2.0)  # the MME restarted
    assert messages(third.data_to_send())[0].result_code == 2001
    ev = [e for e in events(third) if isinstance(e, PeerOpened)]
    assert ev and ev[0].displaced is first
    first.close_displaced()
    assert first.should_close and len(reg) == 1


def test_ecr_answered_in_open_state() -> None:
    conn = opened()
    conn.receive_data(ecr(hbh=5) + ecr(hbh=6), 1.0)
    a, b = messages(conn.data_to_send())
    assert (a.header.hop_by_hop_identifier, b.header.hop_by_hop_identifier) == (5, 6)
    assert a.equipment_status == 0 and a.auth_session_state == 1 and a.header.application_id == 16777252
