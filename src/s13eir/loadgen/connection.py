"""One simulated MME: a TCP connection to the EIR, as an asyncio Protocol.

The base protocol (CER/CEA, the EIR's DWRs and DPRs, our DPR at the end) is the
sans-IO ``diameter.initiator`` core's, as in ``s13eir check``. ECRs are written in one
batch per loop turn and ECAs read straight out of the receive buffer (``AnswerReader``:
no message objects, a walk of the AVPs only for an answer not seen before); every
other frame goes to the core. The CEA and DPA waits are bounded by the caller. Requests are tracked by
hop-by-hop id in a dict kept in send order, so the oldest are always at its front:
expiring timeouts looks only at the requests that have actually expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

from s13eir.diameter.constants import (
    CMD_DEVICE_WATCHDOG,
    CMD_ME_IDENTITY_CHECK,
    DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU,
    TOO_BUSY,
)
from s13eir.diameter.initiator import (
    AnswerReceived,
    CapabilitiesExchanged,
    CapabilitiesRefused,
    Disconnected,
    DisconnectRequested,
    InitiatorConnection,
    Messages,
    RequestReceived,
)

from .doic import Abatement
from .driver import PeerDriver, Traffic
from .stats import Stats
from .wire import NO_OUTCOME, AnswerReader, EcrEncoder, outcome_name

__all__ = ["CerRefused", "MmeConnection", "Traffic"]

_U32 = struct.Struct("!I")
_II = struct.Struct("!II")
_MAX_FRAME = 1 << 20
_SEND_BUFFER_LIMIT = 32 << 20  # open loop: past this, due requests are dropped (and counted), not queued
_REQUEST_BIT = 0x80
_MASK32 = 0xFFFFFFFF


class CerRefused(Exception):
    """The EIR answered the CER with something other than 2001."""


class MmeConnection(PeerDriver):
    """Drive with ``send``/``flush`` (open loop) or ``concurrency`` (closed loop)."""

    def __init__(
        self,
        origin_host: str,
        origin_realm: str,
        state_id: int,
        ids: tuple[int, int],
        traffic: Traffic,
        stats: Stats,
        deck_offset: int,
        concurrency: int = 0,
        budget: int = -1,
        doic: bool = False,
    ) -> None:
        super().__init__(origin_host, traffic, stats, deck_offset, concurrency, budget)  # pending: by hop-by-hop id
        # RFC 7683 reacting node: announce DOIC in every ECR, follow the EIR's overload reports.
        self.abatement: Abatement | None = Abatement() if doic else None
        self.origin_realm = origin_realm
        self.state_id = state_id
        self.messages = Messages(origin_host, origin_realm, state_id)
        self.core: InitiatorConnection | None = None  # from connection_made
        self._hbh0, self._e2e0 = ids
        self._bodies = traffic.bodies
        self.encoder: EcrEncoder | None = None
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # the EIR's realm
        self._dpa: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._buf = bytearray()
        self._reader = AnswerReader()

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self._attach(transport)
        local_ip = (tr.get_extra_info("sockname") or ("127.0.0.1",))[0]
        cer = self.messages.cer(local_ip, self._hbh0, self._e2e0, product="s13eir-load")
        self.core = InitiatorConnection(self.messages, cer, time.monotonic())
        tr.write(self.core.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.core is not None:
            self.core.connection_lost()
        if self._dpa is not None and not self._dpa.done():
            self._dpa.set_result(None)
        self._lost(self.ready, "closed before the CEA", exc)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        now = time.monotonic_ns()
        end = len(buf)
        pos = 0
        pending = self.pending
        stats = self.stats
        unpack = _II.unpack_from
        while end - pos >= 20:
            w0, w1 = unpack(buf, pos)
            length = w0 & 0xFFFFFF
            if w0 >> 24 != 1 or length < 20 or length & 3 or length > _MAX_FRAME:
                self._fatal("unparsable_stream")
                return
            if end - pos < length:
                break
            if w1 & 0xFFFFFF == CMD_ME_IDENTITY_CHECK and not w1 >> 24 & _REQUEST_BIT:
                # The hot path: an ECA.
                entry = pending.pop(_U32.unpack_from(buf, pos + 12)[0], None)
                if entry is None:
                    stats.late_answers += 1
                    if self.abatement is not None:  # its overload report still counts
                        self._take_report(buf, pos, pos + length, now)
                else:
                    self._answer(buf, pos, pos + length, now, entry)
            else:
                self._other(bytes(buf[pos : pos + length]), w1 >> 24, w1 & 0xFFFFFF)
            pos += length
        if pos < end:
            if buf is self._buf:
                del self._buf[:pos]
            else:
                self._buf = bytearray(buf[pos:])
        elif self._buf:
            self._buf = bytearray()
        if self.sending:
            self.top_up(now)
        self.flush()

    # -- answers ----------------------------------------------------------------------------

    def _answer(self, buf: bytes | bytearray, pos: int, end: int, now: int, entry: tuple[int, int, bool]) -> None:
        if not self._count_answer(now, entry):
            return
        combo = entry[1]
        stats = self.stats
        summary = self._reader.read(buf, pos, end)
        if summary is None:
            stats.error("unparsable_answer")
            return
        code, status, got = summary
        stats.result_codes[code] = stats.result_codes.get(code, 0) + 1
        if self.abatement is not None:
            self._take_report(buf, pos, end, now)
        if code == TOO_BUSY:
            stats.busy += 1  # the EIR shedding load: an answer, but no verdict to check
            return
        if status >= 0:
            stats.equipment_status[status] = stats.equipment_status.get(status, 0) + 1
        if got == NO_OUTCOME:
            stats.error("answer_without_result")
        elif got != self._expected[combo]:
            self._mismatch(combo, outcome_name(got))

    def _take_report(self, buf: bytes | bytearray, pos: int, end: int, now: int) -> None:
        ab = self.abatement
        assert ab is not None
        report = self._reader.olr(buf, pos, end)
        if report is not None and report[0] > ab.sequence:
            ab.update(report, now)
            self.stats.doic_reports += 1

    def _other(self, frame: bytes, flags: int, command: int) -> None:
        """Everything but an ECA (CEA, DWR, DPR, DPA: rare) goes to the initiator core."""
        core = self.core
        assert core is not None
        discarded = core.discarded
        core.receive_frame(frame, time.monotonic())
        out = core.data_to_send()
        if out:
            self._out.append(out)
        if core.discarded > discarded and command != CMD_DEVICE_WATCHDOG:
            self.stats.error("unexpected_answer")
        while (event := core.next_event()) is not None:
            if isinstance(event, CapabilitiesExchanged):
                if not self.ready.done():
                    self.ready.set_result(event.origin_realm or self.origin_realm)
            elif isinstance(event, CapabilitiesRefused):
                self._leaving = True  # an EIR that refuses the CER closes the connection
                message = f" ({event.error_message})" if event.error_message else ""
                code = event.result_code if event.result_code is not None else "without a readable Result-Code"
                if not self.ready.done():
                    self.ready.set_exception(CerRefused(f"CEA {code}{message}"))
            elif isinstance(event, DisconnectRequested):
                self._leaving = True  # the EIR closes after our DPA
                self.sending = False
                self.stats.error("eir_sent_dpr")
            elif isinstance(event, Disconnected):
                if self._dpa is not None and not self._dpa.done():
                    self._dpa.set_result(None)
            elif isinstance(event, RequestReceived):
                self.stats.error("unexpected_request")
            elif isinstance(event, AnswerReceived):
                self.stats.error("unexpected_answer")

    # -- sending ----------------------------------------------------------------------------

    def start(self, destination_realm: str, epoch: int) -> None:
        """After the CEA: ECRs go to the EIR's realm."""
        self.encoder = EcrEncoder(self.origin_host, self.origin_realm, destination_realm, epoch, self._hbh0, self._e2e0,
                                  doic=self.abatement is not None)  # fmt: skip

    def send(self, intended_ns: int, measured: bool) -> bool:
        """Queue one ECR (written by ``flush``); False when it was dropped (buffer full)."""
        transport, encoder = self.transport, self.encoder
        if transport is None or encoder is None or transport.is_closing():
            return False
        ab = self.abatement
        if ab is not None and ab.reduction and ab.abate(intended_ns):
            if measured:
                self.stats.abated += 1
            return True  # the loss algorithm: not sent, as if answered by local policy
        if not self._count_request(measured, transport.get_write_buffer_size() > _SEND_BUFFER_LIMIT):
            return False
        combo = self._next_combo()
        hbh = encoder.encode(self._bodies[combo], self._out)
        self.pending[hbh] = (intended_ns, combo, measured)
        return True

    def flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    async def disconnect(self, timeout: float) -> bool:
        """DPR, wait for the DPA (at most ``timeout``), close. False when no DPA came."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        self._leaving = True
        self.sending = False
        loop = asyncio.get_running_loop()
        self._dpa = loop.create_future()
        self.flush()
        core = self.core
        if core is not None:
            # The DPR takes the ids just below the first ECR's, which no request uses.
            core.disconnect(DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU, time.monotonic(),
                            (self._hbh0 - 1) & _MASK32, (self._e2e0 - 1) & _MASK32)  # fmt: skip
            transport.write(core.data_to_send())
            if core.should_close and not self._dpa.done():  # before the CEA: nothing to disconnect
                self._dpa.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._dpa), timeout)
            ok = True
        except TimeoutError:
            ok = False
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), 1.0)
        return ok
