"""One Diameter connection seen from the responder side: the RFC 6733 §5.6
peer state machine with the RFC 3539 watchdog on top, sans-IO.

The owner feeds bytes with ``receive_data(data, now)``, writes whatever
``data_to_send()`` returns, drains ``next_event()``, arms one timer at
``get_timer()`` and calls ``handle_timer(now)`` when it fires. When
``should_close`` becomes true it writes what is left and closes the transport.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..overload import OverloadControl
from . import base_messages
from .answers import busy_answer, error_answer
from .avp import Avp
from .capx import LocalIdentity, PeerInfo, PeerPolicy, build_cea, process_cer
from .constants import (
    APP_BASE,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DISCONNECT_REBOOTING,
    FLAG_REQUEST,
    TOO_BUSY,
    UNABLE_TO_COMPLY,
)
from .doic import Reporter, announced, with_avps
from .doic import in_frame as doic_in_frame
from .events import Event, PeerClosed, PeerOpened, PeerRejected, ProtocolError, WatchdogChanged
from .framing import FrameBuffer, FramingError
from .header import Header, parse_header
from .screening import Rejected, Screening, screen
from .watchdog import Random, Watchdog, WatchdogAction

APP_BASE_BYTES = APP_BASE.to_bytes(4, "big")


class PeerState(enum.Enum):
    WAIT_CER = "wait-cer"  # RFC 6733 "Closed" with an accepted connection, before its CER
    OPEN = "open"  # R-Open
    CLOSING = "closing"
    CLOSED = "closed"


class Application(Protocol):
    """An application behind the base protocol (S13). Gets screened requests only."""

    def handle_request(self, header: Header, frame: bytes, avps: list[Avp], peer: PeerInfo) -> bytes | Any:
        """The answer, or a token for an answer that needs I/O first: the owner resolves
        it and hands the answer back with ``PeerConnection.deliver``."""
        ...


# An application's optional fast path: answers a raw request frame, or returns None to
# let the full path (screening, validation, handle_request) deal with it.
FastPath = Callable[[bytes, PeerInfo], bytes | Any | None]  # bytes, a deferred token, or None


class PeerRegistry:
    """Open connections by Origin-Host, shared by all connections of a node.

    RFC 6733 §5.6 (R-Open, R-Conn-CER: R-Reject) keeps the existing connection when
    the same peer connects again. A peer that restarted announces a new
    Origin-State-Id (§8.16), so then the old connection is stale: it is displaced
    and the new one accepted instead of locking the peer out until its watchdog fires.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[int | None, object]] = {}

    def claim(self, peer: PeerInfo, owner: object) -> tuple[bool, object | None]:
        key = peer.origin_host.lower()
        current = self._open.get(key)
        if current is None or current[1] is owner:
            self._open[key] = (peer.origin_state_id, owner)
            return True, None
        old_state, old_owner = current
        if peer.origin_state_id is not None and old_state is not None and peer.origin_state_id != old_state:
            self._open[key] = (peer.origin_state_id, owner)
            return True, old_owner
        return False, None

    def release(self, origin_host: str, owner: object) -> None:
        key = origin_host.lower()
        current = self._open.get(key)
        if current is not None and current[1] is owner:
            del self._open[key]

    def __len__(self) -> int:
        return len(self._open)


@dataclass(slots=True)
class PeerSettings:
    local: LocalIdentity
    policy: PeerPolicy
    screening: Screening
    applications: Mapping[int, Application]
    registry: PeerRegistry = field(default_factory=PeerRegistry)
    watchdog_interval: float = 30.0
    cer_timeout: float = 10.0
    dpa_timeout: float = 5.0
    max_message_size: int = 65536
    fast_paths: Mapping[int, FastPath] = field(default_factory=dict)  # by application id
    # Requests of one peer waiting for I/O (remote list lookups); past it, 3004 TOO_BUSY.
    max_in_flight: int = 1024
    # The node's admission control (shared by its connections), and its DOIC reports.
    overload: OverloadControl | None = None
    doic: Reporter | None = None


class PeerConnection:
    def __init__(
        self, settings: PeerSettings, now: float, rng: Random, remote_ip: str | None = None, owner: object = None
    ) -> None:
        self.settings = settings
        self.state = PeerState.WAIT_CER
        self.peer: PeerInfo | None = None
        self.remote_ip = remote_ip
        self.should_close = False
        self._owner = owner if owner is not None else self
        self._rng = rng
        self._frames = FrameBuffer(settings.max_message_size)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._watchdog: Watchdog | None = None
        self._deadline: float | None = now + settings.cer_timeout
        self._ids = int(rng.uniform(0, 1 << 31))
        self._deferred: list[object] = []
        self.in_flight = 0
        self.answered = 0  # application requests answered at once (not deferred), for the latency histogram
        self.shed = 0  # requests refused with 3004 by admission control
        # The peer speaks DOIC: its first application request announced it (an MME is
        # configured for DOIC or not), or a later one did. Only then are requests checked.
        self.doic = False
        self._probed = False
        self._doic_waiting: set[bytes] = set()  # hop-by-hop ids of deferred DOIC requests
        self._now = now
        self._dpa_received = False  # in Closing: close once the last deferred answer is out
        # Keyed by the raw 4 application-id bytes so the hot path needs no header decode.
        self._fast = {app.to_bytes(4, "big"): fn for app, fn in settings.fast_paths.items()}

    # -- owner-facing API -------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is PeerState.CLOSED:
            return
        self._now = now
        fast_paths = self._fast
        limit = self.settings.max_in_flight
        fast_frames = 0
        ov = self.settings.overload
        # Admission control: while the node is overloaded, a share of application requests
        # is refused with a 3004 built from a template (cheaper than any answer). A DOIC
        # peer is asked to shed that share itself; it is refused too at full reduction, and
        # while the node is still over a threshold: what it sent before its first report
        # arrived waits in front of the node, and only refusing some of it drains it in time.
        shedding = (ov is not None and ov.reduction and self.state is PeerState.OPEN
                    and (not self.doic or ov.over or ov.reduction >= ov.settings.max_reduction))  # fmt: skip
        for frame in self._frames.frames(data):
            if self.should_close:
                break
            if isinstance(frame, FramingError):
                self._on_framing_error(frame)
                break
            if shedding and frame[4] & FLAG_REQUEST and frame[8:12] != APP_BASE_BYTES:
                assert ov is not None
                if ov.refuse():
                    # A DOIC peer not known as one yet (its first requests) is not refused.
                    if (not ov.over and ov.reduction < ov.settings.max_reduction
                            and self.settings.doic and doic_in_frame(frame)):  # fmt: skip
                        self.doic = True
                    else:
                        self._shed(frame, ov)
                        continue
            if not self._probed and self.state is PeerState.OPEN and frame[4] & FLAG_REQUEST:
                self._probe(frame)
            # A request of an application with a fast path, from an open peer under its
            # in-flight limit: answered here, per frame, without the generic handling.
            if fast_paths and self.state is PeerState.OPEN and frame[4] & FLAG_REQUEST and self.in_flight < limit:
                fast = fast_paths.get(frame[8:12])
                if fast is not None:
                    assert self.peer is not None
                    answer = fast(frame, self.peer)
                    if answer is not None:
                        doic = self.doic and doic_in_frame(frame)
                        if isinstance(answer, bytes):
                            self._out.append(self._with_doic(answer) if doic else answer)
                            self.answered += 1
                        else:
                            self.in_flight += 1
                            self._deferred.append(answer)
                            if doic:
                                self._doic_waiting.add(frame[12:16])
                        fast_frames += 1
                        continue
            self._on_frame(frame, now)
        if fast_frames and self._watchdog is not None:
            self._watchdog.on_traffic(now)  # once per read for what the fast paths answered

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out

    def take_deferred(self) -> list[object]:
        """Requests the application could not answer without I/O, for the owner to resolve."""
        out, self._deferred = self._deferred, []
        return out

    def deliver(self, answer: bytes) -> None:
        """The answer to a deferred request (in any order: answers carry their ids)."""
        if self.state is PeerState.CLOSED:
            return  # the connection went away while the lookup ran
        self.in_flight -= 1
        if self._doic_waiting and answer[12:16] in self._doic_waiting:
            self._doic_waiting.discard(answer[12:16])
            answer = self._with_doic(answer)
        self._out.append(answer)
        if self._dpa_received and self.in_flight == 0:
            self._close("DPA received")  # after the last answer the peer was owed

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def events_pending(self) -> bool:
        return bool(self._events)

    def get_timer(self) -> float | None:
        if self.state is PeerState.OPEN and self._watchdog is not None:
            return self._watchdog.deadline
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self.state is PeerState.OPEN and self._watchdog is not None:
            before = self._watchdog.state
            action = self._watchdog.on_timer(now)
            if self._watchdog.state is not before:
                self._events.append(WatchdogChanged(self._watchdog.state.value))
            if action is WatchdogAction.SEND_DWR:
                local = self.settings.local
                self._out.append(base_messages.dwr(local.origin_avps, local.origin_state_id, self._next_id(),
                                                   self._next_id()))  # fmt: skip
            elif action is WatchdogAction.CLOSE:
                self._close("watchdog: no answer to DWR")
            return
        if self._deadline is not None and now >= self._deadline:
            if self.state is PeerState.WAIT_CER:
                self._reject(0, "no CER received in time", "")
            else:
                self._close("no DPA received in time" if self.state is PeerState.CLOSING else "timeout")

    def stop(self, now: float, cause: int = DISCONNECT_REBOOTING) -> None:
        """Local shutdown: R-Open, Stop -> R-Snd-DPR -> Closing."""
        if self.state is PeerState.OPEN:
            self._out.append(
                base_messages.dpr(self.settings.local.origin_avps, cause, self._next_id(), self._next_id())
            )
            self.state = PeerState.CLOSING
            self._deadline = now + self.settings.dpa_timeout
        elif self.state is PeerState.WAIT_CER:
            self._close("shutting down")

    def refresh_fast_paths(self) -> None:
        """Take ``settings.fast_paths`` again (the owner changed them: a reload that rules a
        fast path out applies to the connections already open)."""
        self._fast = {app.to_bytes(4, "big"): fn for app, fn in self.settings.fast_paths.items()}

    def close_displaced(self) -> None:
        """Another connection from the same peer (restarted, new Origin-State-Id) replaced this one."""
        self._close("replaced by a new connection from the same peer")

    def connection_lost(self) -> None:
        """R-Peer-Disc: the transport went away."""
        if self.state is not PeerState.CLOSED:
            self._close("connection lost")

    # -- internals ----------------------------------------------------------

    def _next_id(self) -> int:
        self._ids = (self._ids + 1) & 0xFFFFFFFF
        return self._ids

    def _on_framing_error(self, err: FramingError) -> None:
        # The stream cannot be resynchronised: answer if the header says it was a
        # request, then close (RFC 6733 §3, 5015 / 5011).
        if err.header is not None:
            header = parse_header(err.header)
            if header.is_request:
                extra = (self.settings.screening.answer_extras or {}).get(header.application_id, b"")
                answer = error_answer(
                    header, [], self.settings.local.origin_avps, err.result_code, message=err.detail, extra=extra
                )
                self._out.append(answer)
            self._events.append(ProtocolError(err.result_code, header.command_code, err.detail))
        self._close(f"framing error: {err.detail}")

    def _on_frame(self, frame: bytes, now: float) -> None:
        """Handle one message that no fast path answered."""
        if (
            self.state in (PeerState.OPEN, PeerState.CLOSING)
            and frame[4] & FLAG_REQUEST
            and self.in_flight >= self.settings.max_in_flight
            and frame[8:12] != b"\0\0\0\0"
        ):
            self._busy(frame)
            return
        header = parse_header(frame)
        if self.state is PeerState.WAIT_CER:
            self._on_first_message(header, frame, now)
            return
        if self._watchdog is not None:
            if not header.is_request and header.command_code == CMD_DEVICE_WATCHDOG:
                self._watchdog.on_message(now, True)
            else:
                self._watchdog.on_traffic(now)
        if not header.is_request:
            if header.command_code == CMD_DISCONNECT_PEER and self.state is PeerState.CLOSING:
                # Closing, R-Rcv-DPA -> R-Disc -> Closed; lookups still running are
                # answered first (or the DPA timeout closes the connection anyway).
                if self.in_flight:
                    self._dpa_received = True
                else:
                    self._close("DPA received")
            return  # DWA handled by the watchdog; other answers are for requests we never send
        # In Closing (our DPR sent), requests still in transit are answered, not dropped:
        # the peer learns of the disconnect only when the DPR reaches it.
        assert self.peer is not None
        if header.application_id == 0:
            self._on_base_request(header, frame)
            return
        screened = screen(header, frame, self.settings.screening)
        if isinstance(screened, Rejected):
            self._out.append(screened.answer)
            self.answered += 1
            self._events.append(ProtocolError(screened.result_code, header.command_code, screened.detail))
            return
        doic = self.settings.doic is not None and announced(screened[1]) is not None
        if doic:
            self.doic = True
        app = self.settings.applications[header.application_id]
        result = app.handle_request(header, frame, screened[1], self.peer)
        if isinstance(result, bytes):
            self._out.append(self._with_doic(result) if doic else result)
            self.answered += 1
        else:
            self.in_flight += 1
            self._deferred.append(result)
            if doic:
                self._doic_waiting.add(frame[12:16])

    def _probe(self, frame: bytes) -> None:
        if frame[8:12] != APP_BASE_BYTES:
            self._probed = True
            self.doic = self.settings.doic is not None and doic_in_frame(frame)

    def _with_doic(self, answer: bytes) -> bytes:
        assert self.settings.doic is not None
        return with_avps(answer, self.settings.doic.answer_avps(self._now))

    def _shed(self, frame: bytes, ov: OverloadControl) -> None:
        answer = busy_answer(frame, self.settings.local.origin_avps, "overloaded")
        # A DOIC peer's 3004 carries the report too (RFC 7683 §5.2.1.2, §5.5.2).
        self._out.append(self._with_doic(answer) if self.doic and doic_in_frame(frame) else answer)
        self.answered += 1
        self.shed += 1
        ov.refused += 1

    def _busy(self, frame: bytes) -> None:
        # Back-pressure instead of a silent drop: the MME (or its DRA) can retry elsewhere.
        header = parse_header(frame)
        detail = f"more than {self.settings.max_in_flight} requests in flight"
        self._out.append(busy_answer(frame, self.settings.local.origin_avps, detail))
        self.answered += 1
        self._events.append(ProtocolError(TOO_BUSY, header.command_code, detail))

    def _on_first_message(self, header: Header, frame: bytes, now: float) -> None:
        # Only R-Conn-CER is defined for a fresh connection; anything else closes it.
        if not (header.is_request and header.command_code == CMD_CAPABILITIES_EXCHANGE):
            self._reject(0, f"command {header.command_code} before CER", "")
            return
        screened = screen(header, frame, self.settings.screening)
        if isinstance(screened, Rejected):
            cea = build_cea(header, self.settings.local, screened.result_code, screened.detail)
            self._out.append(cea)
            self._reject(screened.result_code, screened.detail, "")
            return
        outcome = process_cer(header, screened[1], self.settings.local, self.settings.policy,
                              self.settings.screening.dictionary, self.remote_ip,
                              self.settings.screening.max_avp_depth)  # fmt: skip
        host = outcome.peer.origin_host if outcome.peer else ""
        if not outcome.accepted or outcome.peer is None:
            self._out.append(outcome.cea)
            self._reject(outcome.result_code, outcome.reason, host)
            return
        accepted, displaced = self.settings.registry.claim(outcome.peer, self._owner)
        if not accepted:
            reason = f"{host} already has an open connection (same Origin-State-Id)"
            self._out.append(build_cea(header, self.settings.local, UNABLE_TO_COMPLY, reason))
            self._reject(UNABLE_TO_COMPLY, reason, host)
            return
        self._out.append(outcome.cea)
        self.peer = outcome.peer
        self.state = PeerState.OPEN
        self._deadline = None
        self._watchdog = Watchdog(self.settings.watchdog_interval, self._rng, now)
        self._events.append(PeerOpened(outcome.peer, displaced))

    def _on_base_request(self, header: Header, frame: bytes) -> None:
        code = header.command_code
        screened = screen(header, frame, self.settings.screening)  # 3001 for commands not in the dictionary
        if isinstance(screened, Rejected):
            self._out.append(screened.answer)
            self._events.append(ProtocolError(screened.result_code, code, screened.detail))
            return
        local = self.settings.local
        if code == CMD_DEVICE_WATCHDOG:
            self._out.append(base_messages.dwa(header, local.origin_avps, local.origin_state_id))
        elif code == CMD_DISCONNECT_PEER:
            # R-Open, R-Rcv-DPR: R-Snd-DPA, then the connection goes down.
            self._out.append(base_messages.dpa(header, local.origin_avps))
            self._close("DPR received")
        else:
            # R-Open, R-Rcv-CER: R-Snd-CEA (capabilities re-announced on an open connection).
            outcome = process_cer(header, screened[1], local, self.settings.policy,
                                  self.settings.screening.dictionary, self.remote_ip,
                                  self.settings.screening.max_avp_depth)  # fmt: skip
            self._out.append(outcome.cea)
            if not outcome.accepted:
                self._close(f"CER on open connection rejected: {outcome.reason}")

    def _reject(self, result_code: int, reason: str, host: str) -> None:
        self._events.append(PeerRejected(result_code, reason, host))
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self.state is PeerState.CLOSED:
            return
        if self.peer is not None:
            self.settings.registry.release(self.peer.origin_host, self._owner)
        self.state = PeerState.CLOSED
        self.should_close = True
        self._deadline = None
        self._events.append(PeerClosed(reason))
