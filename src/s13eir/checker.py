"""One ME-Identity-Check as an MME would make it (CER, ECR, DPR): ``s13eir check``.

Messages are built and answers read with s13eir's own codec (``s13eir.diameter`` and
the simulated MMEs' ``loadgen.wire``), not with python-diameter, whose import alone
takes longer than a whole check should. ``s13eir.client`` is the python-diameter MME
the tests use as an independent peer; both give the same :class:`CheckResult`, and
the tests compare them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .diameter.avp import Avp, AvpLengthError, decode_avps, read_u32
from .diameter.constants import (
    AVP_EQUIPMENT_STATUS,
    AVP_ERROR_MESSAGE,
    AVP_EXPERIMENTAL_RESULT,
    AVP_EXPERIMENTAL_RESULT_CODE,
    AVP_ORIGIN_REALM,
    AVP_RESULT_CODE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DISCONNECT_REBOOTING,
    ERROR_EQUIPMENT_UNKNOWN,
    SUCCESS,
    VENDOR_3GPP,
)
from .diameter.framing import FrameBuffer, FramingError
from .diameter.header import HEADER_LENGTH, parse_header
from .loadgen import wire

__all__ = ["CheckResult", "ClientError", "check_imei"]

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


def _origin_realm(frame: bytes) -> str:
    avps = decode_avps(frame, HEADER_LENGTH)
    return next((a.data.decode("utf-8", "replace") for a in avps if a.code == AVP_ORIGIN_REALM and not a.vendor), "")


class _Mme:
    """One connection: requests out, their answers back by hop-by-hop id, DWRs answered."""

    def __init__(self, origin_host: str, origin_realm: str, timeout: float) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.timeout = timeout
        self.state_id = int(time.time()) & _MASK32
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._frames = FrameBuffer(1 << 20)
        self._answers: dict[int, bytes] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def next_id(self) -> int:
        return next(self._ids) & _MASK32

    async def connect(self, host: str, port: int) -> str:
        """TCP, CER/CEA; returns the EIR's Origin-Realm."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}") from None
        self._reader, self._writer = reader, writer
        local_ip = str(writer.get_extra_info("sockname")[0])
        hbh = self.next_id()
        cer = wire.cer(
            self.origin_host, self.origin_realm, local_ip, self.state_id, hbh, self.next_id(), product="s13eir-check"
        )
        cea = await self.request(cer, hbh)
        answer = read_answer(cea)
        if answer.result_code != SUCCESS:
            await self.close()
            raise ClientError(f"CER refused with {answer.result_code}: {answer.error_message}")
        return _origin_realm(cea)

    async def request(self, message: bytes, hop_by_hop: int) -> bytes:
        """Send a request and return its answer, answering DWRs that arrive meanwhile."""
        assert self._writer is not None
        self._writer.write(message)
        deadline = asyncio.get_running_loop().time() + self.timeout
        while hop_by_hop not in self._answers:
            frame = await self._next_frame(deadline)
            header = parse_header(frame)
            if header.is_request and header.command_code == CMD_DEVICE_WATCHDOG:
                self._writer.write(
                    wire.base_answer(
                        CMD_DEVICE_WATCHDOG,
                        self.origin_host,
                        self.origin_realm,
                        self.state_id,
                        header.hop_by_hop,
                        header.end_to_end,
                    )
                )
            elif header.is_request and header.command_code == CMD_DISCONNECT_PEER:
                raise ClientError("the EIR is disconnecting (DPR)")
            elif not header.is_request:
                self._answers[header.hop_by_hop] = frame
        return self._answers.pop(hop_by_hop)

    async def _next_frame(self, deadline: float) -> bytes:
        assert self._reader is not None
        while True:
            frame = self._frames.next_frame()
            if isinstance(frame, FramingError):
                raise ClientError(f"unreadable answer: {frame.detail}")
            if frame is not None:
                return frame
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ClientError("timed out waiting for an answer")
            try:
                data = await asyncio.wait_for(self._reader.read(65536), remaining)
            except TimeoutError:
                raise ClientError("timed out waiting for an answer") from None
            except OSError as exc:
                raise ClientError(f"connection failed: {exc}") from None
            if not data:
                raise ClientError("the EIR closed the connection")
            self._frames.feed(data)

    async def disconnect(self) -> None:
        """DPR, wait for the DPA, close."""
        if self._writer is None:
            return
        hbh = self.next_id()
        dpr = wire.dpr(self.origin_host, self.origin_realm, DISCONNECT_REBOOTING, hbh, self.next_id())
        with contextlib.suppress(ClientError):
            await self.request(dpr, hbh)
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


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
    mme = _Mme(origin_host, origin_realm, timeout)
    peer_realm = await mme.connect(host, port)
    try:
        encoder = wire.EcrEncoder(
            origin_host, origin_realm, peer_realm or origin_realm, int(time.time()), mme.next_id(), mme.next_id()
        )
        out: list[bytes] = []
        hbh = encoder.encode(wire.ecr_body(imei, imsi or None, sv), out)
        return read_answer(await mme.request(b"".join(out), hbh))
    finally:
        await mme.disconnect()
