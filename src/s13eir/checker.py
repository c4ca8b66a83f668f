"""One ME-Identity-Check as an MME would make it (CER, ECR, DPR): ``s13eir check``.

The base protocol is the sans-IO ``diameter.initiator`` core, driven here by a thin
asyncio shell (:class:`Initiator`). Messages are built and answers read with s13eir's
own codec (``s13eir.diameter`` and the simulated MMEs' ``loadgen.wire``), not with
python-diameter, whose import alone takes longer than a whole check should. ``s13eir.client`` is the python-diameter MME
the tests use as an independent peer; both give the same :class:`CheckResult`, and
the tests compare them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .diameter.avp import Avp, AvpLengthError, decode_avps, read_u32
from .diameter.constants import (
    AVP_EQUIPMENT_STATUS,
    AVP_ERROR_MESSAGE,
    AVP_EXPERIMENTAL_RESULT,
    AVP_EXPERIMENTAL_RESULT_CODE,
    AVP_RESULT_CODE,
    DISCONNECT_REBOOTING,
    ERROR_EQUIPMENT_UNKNOWN,
    SUCCESS,
    VENDOR_3GPP,
)
from .diameter.header import HEADER_LENGTH, parse_header
from .diameter.initiator import (
    AnswerReceived,
    BaseEncoder,
    CapabilitiesExchanged,
    CapabilitiesRefused,
    DisconnectRequested,
    Failed,
    InitiatorConnection,
    InitiatorEvent,
    InitiatorState,
    Messages,
)
from .loadgen import wire

__all__ = ["CheckResult", "ClientError", "Initiator", "check_imei"]

_STATUS_NAMES = {wire.WHITELISTED: "WHITELISTED", wire.BLACKLISTED: "BLACKLISTED", wire.GREYLISTED: "GREYLISTED"}
_MASK32 = 0xFFFFFFFF


class ClientError(Exception):
    """The EIR could not be asked: connection, CER or protocol failure."""


@dataclass
class CheckResult:
    result_code: int | None
    experimental_result_code: int | None
    equipment_status: int | None
    error_message: str | None
    e_bit: bool
    raw: bytes = field(repr=False)

    @property
    def verdict(self) -> str:
        if self.result_code == SUCCESS and self.equipment_status is not None:
            return _STATUS_NAMES.get(self.equipment_status, f"status {self.equipment_status}")
        if self.experimental_result_code == ERROR_EQUIPMENT_UNKNOWN:
            return "EQUIPMENT_UNKNOWN"
        code = self.result_code if self.result_code is not None else self.experimental_result_code
        return f"ERROR {code}" + (f" ({self.error_message})" if self.error_message else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "result_code": self.result_code,
            "experimental_result_code": self.experimental_result_code,
            "equipment_status": self.equipment_status,
            "error_message": self.error_message,
        }


def read_answer(frame: bytes) -> CheckResult:
    """What an answer (CEA, ECA...) says: its top-level Result-Code, Experimental-Result-Code,
    3GPP Equipment-Status and Error-Message, and the E-bit."""
    try:
        avps = decode_avps(frame, HEADER_LENGTH)
    except AvpLengthError as exc:
        raise ClientError(f"unreadable answer: {exc}") from None
    result = exp = status = None
    message = None
    for avp in avps:
        if avp.code == AVP_RESULT_CODE and not avp.vendor:
            result = _u32(avp)
        elif avp.code == AVP_EXPERIMENTAL_RESULT and not avp.vendor:
            try:
                inner = decode_avps(avp.data)
            except AvpLengthError as exc:
                raise ClientError(f"unreadable Experimental-Result: {exc}") from None
            exp = next((_u32(a) for a in inner if a.code == AVP_EXPERIMENTAL_RESULT_CODE and not a.vendor), None)
        elif avp.code == AVP_EQUIPMENT_STATUS and avp.vendor == VENDOR_3GPP:
            status = _u32(avp)
        elif avp.code == AVP_ERROR_MESSAGE and not avp.vendor:
            message = avp.data.decode("utf-8", "replace")
    return CheckResult(result, exp, status, message, parse_header(frame).is_error, frame)


def _u32(avp: Avp) -> int:
    if len(avp.data) != 4:
        raise ClientError(f"unreadable answer: AVP {avp.code} has {len(avp.data)} bytes, not 4")
    return read_u32(avp.data)


class Initiator:
    """The asyncio shell around the sans-IO ``diameter.initiator`` core: one TCP
    connection as an MME. Answers are kept by hop-by-hop id (they may come in any order);
    the core answers the EIR's DWRs meanwhile. ``s13eir.client`` drives the same shell
    with python-diameter's messages."""

    def __init__(self, encoder: BaseEncoder, timeout: float) -> None:
        self.encoder = encoder
        self.timeout = timeout
        self.core: InitiatorConnection | None = None
        self._answers: dict[int, bytes] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, host: str, port: int, cer: Callable[[str], bytes]) -> CapabilitiesExchanged:
        """TCP, then the CER that ``cer(local_ip)`` encodes, and its CEA."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}") from None
        self._reader, self._writer = reader, writer
        loop = asyncio.get_running_loop()
        core = self.core = InitiatorConnection(
            self.encoder, cer(str(writer.get_extra_info("sockname")[0])), loop.time(), cea_timeout=self.timeout
        )
        opened: list[CapabilitiesExchanged] = []
        try:
            await self._pump(lambda: core.state is not InitiatorState.WAIT_CEA, loop.time() + self.timeout, opened)
        except ClientError:
            await self.close()
            raise
        return opened[0]

    def send(self, frame: bytes) -> None:
        """Write a request without waiting (its answer is collected by ``answer``)."""
        assert self._writer is not None
        self._writer.write(frame)

    async def request(self, frame: bytes) -> bytes:
        self.send(frame)
        return await self.answer(parse_header(frame).hop_by_hop)

    async def answer(self, hop_by_hop: int) -> bytes:
        """The answer with this hop-by-hop id; requests sent meanwhile keep theirs."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        await self._pump(lambda: hop_by_hop in self._answers, deadline)
        return self._answers.pop(hop_by_hop)

    async def disconnect(self, cause: int, hop_by_hop: int, end_to_end: int) -> None:
        """DPR, wait for the DPA, close."""
        core = self.core
        if self._writer is None or core is None:
            return
        loop = asyncio.get_running_loop()
        core.disconnect(cause, loop.time(), hop_by_hop, end_to_end)
        with contextlib.suppress(ClientError):
            await self._pump(lambda: core.state is InitiatorState.CLOSED, loop.time() + self.timeout)
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def _pump(
        self, done: Callable[[], bool], deadline: float, opened: list[CapabilitiesExchanged] | None = None
    ) -> None:
        """Feed the core until ``done()``; raise ClientError on what ends the connection."""
        core, reader, writer = self.core, self._reader, self._writer
        assert core is not None and reader is not None and writer is not None
        loop = asyncio.get_running_loop()
        while True:
            out = core.data_to_send()
            if out:
                writer.write(out)
            while (event := core.next_event()) is not None:
                self._event(event, opened)
            if done():
                return
            now = loop.time()
            if now >= deadline:
                raise ClientError("timed out waiting for an answer")
            timer = core.get_timer()
            wake = deadline if timer is None else min(deadline, timer)
            try:
                data = await asyncio.wait_for(reader.read(65536), max(0.0, wake - now))
            except TimeoutError:
                core.handle_timer(loop.time())
                continue
            except OSError as exc:
                raise ClientError(f"connection failed: {exc}") from None
            if not data:
                core.connection_lost()
                if done():
                    return
                raise ClientError("the EIR closed the connection")
            core.receive_data(data, loop.time())

    def _event(self, event: InitiatorEvent, opened: list[CapabilitiesExchanged] | None) -> None:
        if isinstance(event, AnswerReceived):
            self._answers[event.header.hop_by_hop] = event.frame
        elif isinstance(event, CapabilitiesExchanged):
            if opened is not None:
                opened.append(event)
        elif isinstance(event, CapabilitiesRefused):
            raise ClientError(f"CER refused with {event.result_code}: {event.error_message}")
        elif isinstance(event, DisconnectRequested):
            raise ClientError("the EIR is disconnecting (DPR)")
        elif isinstance(event, Failed):
            raise ClientError(event.reason)
        # Disconnected ends the wait by the state; a RequestReceived is not for an MME.


async def check_imei(
    host: str,
    port: int,
    imei: str,
    imsi: str | None = None,
    sv: str | None = None,
    origin_host: str = "mme.s13eir.test",
    origin_realm: str = "s13eir.test",
    timeout: float = 5.0,
) -> CheckResult:
    """Connect (CER), send one ECR, disconnect (DPR); the ECA as a :class:`CheckResult`.
    Raises :class:`ClientError` when the EIR cannot be asked."""
    state_id = int(time.time()) & _MASK32
    messages = Messages(origin_host, origin_realm, state_id)
    ids = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def next_id() -> int:
        return next(ids) & _MASK32

    mme = Initiator(messages, timeout)
    opened = await mme.connect(host, port, lambda ip: messages.cer(ip, next_id(), next_id(), product="s13eir-check"))
    try:
        encoder = wire.EcrEncoder(
            origin_host, origin_realm, opened.origin_realm or origin_realm, int(time.time()), next_id(), next_id()
        )
        out: list[bytes] = []
        encoder.encode(wire.ecr_body(imei, imsi or None, sv), out)
        return read_answer(await mme.request(b"".join(out)))
    finally:
        await mme.disconnect(DISCONNECT_REBOOTING, next_id(), next_id())
