"""An S13 client, as an MME would behave: CER, ECRs, DPR.

The tests' independent MME: every message it sends is built, and every answer decoded,
with python-diameter, not with s13eir's own codec. ``s13eir check`` uses
:mod:`s13eir.checker` instead (same results, without python-diameter's import time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time

from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogAnswer,
    DisconnectPeerRequest,
    MeIdentityCheckRequest,
)

from .checker import CheckResult, ClientError
from .diameter.constants import (
    APP_S13,
    AVP_ERROR_MESSAGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DISCONNECT_REBOOTING,
    SUCCESS,
    VENDOR_3GPP,
)
from .diameter.framing import FrameBuffer, FramingError
from .diameter.header import parse_header

__all__ = ["CheckResult", "ClientError", "S13Client", "check_once"]


def _error_message(msg: Message) -> str | None:
    # Error-Message is not in python-diameter's ECA attributes; it arrives as a plain AVP.
    for avp in msg.avps:
        if avp.code == AVP_ERROR_MESSAGE and not avp.vendor_id:
            return str(avp.value)
    return None


class S13Client:
    """A minimal MME over one TCP connection (asyncio streams; not a hot path)."""

    def __init__(self, origin_host: str, origin_realm: str, timeout: float = 5.0) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.timeout = timeout
        self.peer_realm = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = FrameBuffer(1 << 20)
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._state_id = int(time.time())
        self._answers: dict[int, bytes] = {}

    async def connect(self, host: str, port: int) -> Message:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}") from None
        self._reader, self._writer = reader, writer
        cer = CapabilitiesExchangeRequest()
        self._ident(cer)
        cer.host_ip_address = [writer.get_extra_info("sockname")[0]]
        cer.vendor_id = 0
        cer.product_name = "s13eir-check"
        cer.origin_state_id = self._state_id
        cer.supported_vendor_id = [VENDOR_3GPP]
        cer.vendor_specific_application_id = [
            VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=APP_S13)
        ]
        cea = await self.request(cer)
        if cea.result_code != SUCCESS:
            await self.close()
            raise ClientError(f"CER refused with {cea.result_code}: {getattr(cea, 'error_message', None)}")
        self.peer_realm = cea.origin_realm.decode()
        return cea

    def _ident(self, msg: Message) -> None:
        msg.header.hop_by_hop_identifier = next(self._ids) & 0xFFFFFFFF
        msg.header.end_to_end_identifier = next(self._ids) & 0xFFFFFFFF
        msg.origin_host = self.origin_host.encode()
        msg.origin_realm = self.origin_realm.encode()

    def ecr(self, imei: str, imsi: str | None = None, sv: str | None = None) -> MeIdentityCheckRequest:
        req = MeIdentityCheckRequest()
        req.header.application_id = APP_S13  # a fresh python-diameter ECR has application id 0
        self._ident(req)
        req.session_id = f"{self.origin_host};{int(time.time())};{next(self._ids)}"
        req.auth_session_state = 1
        req.destination_realm = (self.peer_realm or self.origin_realm).encode()
        req.terminal_information = TerminalInformation(imei=imei, software_version=sv)
        if imsi:
            req.user_name = imsi
        return req

    async def check(self, imei: str, imsi: str | None = None, sv: str | None = None) -> CheckResult:
        eca = await self.request(self.ecr(imei, imsi, sv))
        raw = eca.as_bytes()
        exp = getattr(eca, "experimental_result", None)
        return CheckResult(
            result_code=getattr(eca, "result_code", None),
            experimental_result_code=exp.experimental_result_code if exp is not None else None,
            equipment_status=getattr(eca, "equipment_status", None),
            error_message=_error_message(eca),
            e_bit=eca.header.is_error,
            raw=raw,
        )

    async def request(self, msg: Message) -> Message:
        """Send a request and return its answer, answering DWRs that arrive meanwhile."""
        assert self._writer is not None
        self._writer.write(msg.as_bytes())
        return await self.request_answer(msg.header.hop_by_hop_identifier)

    async def request_answer(self, hop_by_hop: int) -> Message:
        """The answer with this hop-by-hop id (answers may come in any order)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while hop_by_hop not in self._answers:
            frame = await self._next_frame(deadline)
            header = parse_header(frame)
            if header.is_request and header.command_code == CMD_DEVICE_WATCHDOG:
                self._answer_dwr(frame)
            elif header.is_request and header.command_code == CMD_DISCONNECT_PEER:
                raise ClientError("the EIR is disconnecting (DPR)")
            elif not header.is_request:
                self._answers[header.hop_by_hop] = frame
        return Message.from_bytes(self._answers.pop(hop_by_hop))

    def _answer_dwr(self, frame: bytes) -> None:
        assert self._writer is not None
        dwr = Message.from_bytes(frame)
        dwa = DeviceWatchdogAnswer()
        dwa.header.hop_by_hop_identifier = dwr.header.hop_by_hop_identifier
        dwa.header.end_to_end_identifier = dwr.header.end_to_end_identifier
        dwa.result_code = SUCCESS
        dwa.origin_host = self.origin_host.encode()
        dwa.origin_realm = self.origin_realm.encode()
        dwa.origin_state_id = self._state_id
        self._writer.write(dwa.as_bytes())

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
        dpr = DisconnectPeerRequest()
        self._ident(dpr)
        dpr.disconnect_cause = DISCONNECT_REBOOTING
        with contextlib.suppress(ClientError):
            await self.request(dpr)
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


async def check_once(
    host: str,
    port: int,
    imei: str,
    imsi: str | None = None,
    sv: str | None = None,
    origin_host: str = "mme.s13eir.test",
    origin_realm: str = "s13eir.test",
    timeout: float = 5.0,
) -> CheckResult:
    client = S13Client(origin_host, origin_realm, timeout)
    await client.connect(host, port)
    try:
        return await client.check(imei, imsi, sv)
    finally:
        await client.disconnect()
