"""One Diameter connection seen from the initiator side (an MME), sans-IO.

RFC 6733 §5.6 for the side that connects: send the CER (Wait-I-CEA), open on a
2001 CEA (I-Open), answer the responder's DWRs (§5.5, RFC 3539) and DPRs, send a DPR
and close on its DPA (Closing). Application requests and their answers pass through:
the owner writes its requests itself and gets each answer as an event.

The owner creates it with the CER already encoded, writes ``data_to_send()``, feeds
``receive_data(data, now)`` (or, with its own framing, ``receive_frame``), drains
``next_event()``, arms one timer at ``get_timer()`` and calls ``handle_timer(now)``
when it fires. When ``should_close`` becomes true it writes what is left and closes.

How the base messages are encoded is the owner's choice (``BaseEncoder``):
:class:`Messages` is s13eir's own, the tests bring python-diameter's.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from . import avp as enc
from . import base_messages
from .avp import AvpLengthError, decode_avps, read_u32
from .constants import (
    APP_S13,
    AVP_AUTH_APPLICATION_ID,
    AVP_DISCONNECT_CAUSE,
    AVP_ERROR_MESSAGE,
    AVP_FIRMWARE_REVISION,
    AVP_HOST_IP_ADDRESS,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RESULT_CODE,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_VENDOR_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    FLAG_REQUEST,
    SUCCESS,
    VENDOR_3GPP,
)
from .framing import FrameBuffer, FramingError
from .header import HEADER_LENGTH, Header, base_message, parse_header

__all__ = [
    "AnswerReceived",
    "BaseEncoder",
    "CapabilitiesExchanged",
    "CapabilitiesRefused",
    "DisconnectRequested",
    "Disconnected",
    "Failed",
    "InitiatorConnection",
    "InitiatorEvent",
    "InitiatorState",
    "Messages",
    "RequestReceived",
]


class InitiatorState(enum.Enum):
    WAIT_CEA = "wait-cea"  # Wait-I-CEA
    OPEN = "open"  # I-Open
    CLOSING = "closing"  # our DPR sent, its DPA awaited
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CapabilitiesExchanged:
    origin_host: str
    origin_realm: str
    cea: bytes


@dataclass(frozen=True, slots=True)
class CapabilitiesRefused:
    result_code: int | None  # None when the CEA carried no readable Result-Code
    error_message: str | None
    cea: bytes


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """An answer other than the CEA, DWA and DPA: to one of the owner's requests."""

    header: Header
    frame: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request other than DWR and DPR (the responder has no business sending one to an
    MME over S13; the owner decides what to do)."""

    header: Header
    frame: bytes


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The responder sent a DPR; its DPA is queued and the connection closes after it."""

    cause: int | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The DPA to our DPR arrived."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The connection cannot go on: an unframable stream, or no CEA/DPA in time."""

    reason: str


InitiatorEvent = (
    CapabilitiesExchanged
    | CapabilitiesRefused
    | AnswerReceived
    | RequestReceived
    | DisconnectRequested
    | Disconnected
    | Failed
)


class BaseEncoder(Protocol):
    """The base-protocol messages the initiator sends by itself."""

    def dwa(self, request: Header) -> bytes: ...

    def dpa(self, request: Header) -> bytes: ...

    def dpr(self, cause: int, hop_by_hop: int, end_to_end: int) -> bytes: ...


class Messages:
    """An MME's base messages in s13eir's own codec (CER advertising S13, DWA, DPA, DPR)."""

    __slots__ = ("origin_avps", "origin_host", "origin_realm", "state_id")

    def __init__(self, origin_host: str, origin_realm: str, state_id: int) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.state_id = state_id
        self.origin_avps = enc.utf8(AVP_ORIGIN_HOST, origin_host) + enc.utf8(AVP_ORIGIN_REALM, origin_realm)

    def cer(self, host_ip: str, hop_by_hop: int, end_to_end: int, *, product: str = "s13eir") -> bytes:
        """RFC 6733 §5.3.1 with S13 in a Vendor-Specific-Application-Id (TS 29.272 §7.1)."""
        vsai = enc.grouped(
            AVP_VENDOR_SPECIFIC_APPLICATION_ID,
            [enc.u32(AVP_VENDOR_ID, VENDOR_3GPP), enc.u32(AVP_AUTH_APPLICATION_ID, APP_S13)],
        )
        return base_message(
            FLAG_REQUEST,
            CMD_CAPABILITIES_EXCHANGE,
            hop_by_hop,
            end_to_end,
            [
                self.origin_avps,
                enc.address(AVP_HOST_IP_ADDRESS, host_ip),
                enc.u32(AVP_VENDOR_ID, 0),
                enc.utf8(AVP_PRODUCT_NAME, product, mandatory=False),
                enc.u32(AVP_ORIGIN_STATE_ID, self.state_id),
                enc.u32(AVP_SUPPORTED_VENDOR_ID, VENDOR_3GPP),
                vsai,
                enc.u32(AVP_FIRMWARE_REVISION, 1, mandatory=False),
            ],
        )

    def dwa(self, request: Header) -> bytes:
        # RFC 6733 §5.5.2: Origin-State-Id MAY be in a DWA; an MME sends it so that the
        # EIR sees a restart without waiting for the next CER.
        return base_messages.dwa(request, self.origin_avps, self.state_id)

    def dpa(self, request: Header) -> bytes:
        return base_messages.dpa(request, self.origin_avps)

    def dpr(self, cause: int, hop_by_hop: int, end_to_end: int) -> bytes:
        return base_messages.dpr(self.origin_avps, cause, hop_by_hop, end_to_end)


class InitiatorConnection:
    def __init__(
        self,
        messages: BaseEncoder,
        cer: bytes,
        now: float,
        *,
        cea_timeout: float = 10.0,
        dpa_timeout: float = 5.0,
        max_message_size: int = 1 << 20,
    ) -> None:
        self.messages = messages
        self.state = InitiatorState.WAIT_CEA
        self.should_close = False
        self.peer_host = ""
        self.peer_realm = ""
        self.watchdogs_answered = 0
        self.discarded = 0  # answers that matched nothing (a CEA or DPA not ours)
        self.dpa_timeout = dpa_timeout
        self._cer_ids = _ids(cer)
        self._dpr_ids: tuple[int, int] | None = None
        self._frames = FrameBuffer(max_message_size)
        self._out: list[bytes] = [cer]
        self._events: deque[InitiatorEvent] = deque()
        self._deadline: float | None = now + cea_timeout

    # -- owner interface ----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> InitiatorEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self.state is InitiatorState.WAIT_CEA:
            self._fail("no CEA to the CER in time")
        elif self.state is InitiatorState.CLOSING:
            self._fail("no DPA to the DPR in time")

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is InitiatorState.CLOSED:
            return
        self._frames.feed(data)
        while not self.should_close:
            frame = self._frames.next_frame()
            if frame is None:
                return
            if isinstance(frame, FramingError):
                self._fail(f"unframable stream from the responder: {frame.detail}")
                return
            self.receive_frame(frame, now)

    def receive_frame(self, frame: bytes, now: float) -> None:
        """One whole message (for an owner that frames the stream itself)."""
        if self.state is InitiatorState.CLOSED:
            return
        header = parse_header(frame)
        if header.is_request:
            self._request(header, frame)
        elif header.command_code == CMD_CAPABILITIES_EXCHANGE:
            self._cea(header, frame)
        elif header.command_code == CMD_DISCONNECT_PEER:
            if self.state is InitiatorState.CLOSING and (header.hop_by_hop, header.end_to_end) == self._dpr_ids:
                self._close(Disconnected())
            else:
                self.discarded += 1
        elif header.command_code == CMD_DEVICE_WATCHDOG:
            self.discarded += 1  # this side sends no DWR
        else:
            self._events.append(AnswerReceived(header, frame))

    def disconnect(self, cause: int, now: float, hop_by_hop: int, end_to_end: int) -> None:
        """Send a DPR (RFC 6733 §5.4) and wait ``dpa_timeout`` for its DPA."""
        if self.state in (InitiatorState.CLOSING, InitiatorState.CLOSED):
            return
        if self.state is InitiatorState.WAIT_CEA:
            self._close(None)  # nothing to disconnect: no capabilities were exchanged
            return
        self.state = InitiatorState.CLOSING
        self._dpr_ids = (hop_by_hop, end_to_end)
        self._out.append(self.messages.dpr(cause, hop_by_hop, end_to_end))
        self._deadline = now + self.dpa_timeout

    def connection_lost(self) -> None:
        self.state = InitiatorState.CLOSED
        self._deadline = None

    # -- internals ----------------------------------------------------------------------

    def _request(self, header: Header, frame: bytes) -> None:
        if header.command_code == CMD_DEVICE_WATCHDOG:
            self._out.append(self.messages.dwa(header))
            self.watchdogs_answered += 1
        elif header.command_code == CMD_DISCONNECT_PEER:
            self._out.append(self.messages.dpa(header))
            self._close(DisconnectRequested(_u32_avp(frame, AVP_DISCONNECT_CAUSE)))
        else:
            self._events.append(RequestReceived(header, frame))

    def _cea(self, header: Header, frame: bytes) -> None:
        if self.state is not InitiatorState.WAIT_CEA or (header.hop_by_hop, header.end_to_end) != self._cer_ids:
            self.discarded += 1
            return
        code = _u32_avp(frame, AVP_RESULT_CODE)
        if code != SUCCESS:
            self._close(CapabilitiesRefused(code, _text_avp(frame, AVP_ERROR_MESSAGE), frame))
            return
        self.state = InitiatorState.OPEN
        self._deadline = None
        self.peer_host = _text_avp(frame, AVP_ORIGIN_HOST) or ""
        self.peer_realm = _text_avp(frame, AVP_ORIGIN_REALM) or ""
        self._events.append(CapabilitiesExchanged(self.peer_host, self.peer_realm, frame))

    def _fail(self, reason: str) -> None:
        self._close(Failed(reason))

    def _close(self, event: InitiatorEvent | None) -> None:
        self.state = InitiatorState.CLOSED
        self.should_close = True
        self._deadline = None
        if event is not None:
            self._events.append(event)


def _ids(frame: bytes) -> tuple[int, int]:
    header = parse_header(frame)
    return header.hop_by_hop, header.end_to_end


def _base_avp(frame: bytes, code: int) -> bytes | None:
    try:
        avps = decode_avps(frame, HEADER_LENGTH)
    except AvpLengthError:
        return None
    return next((a.data for a in avps if a.code == code and not a.vendor), None)


def _u32_avp(frame: bytes, code: int) -> int | None:
    data = _base_avp(frame, code)
    return read_u32(data) if data is not None and len(data) == 4 else None


def _text_avp(frame: bytes, code: int) -> str | None:
    data = _base_avp(frame, code)
    return data.decode("utf-8", "replace") if data is not None else None
