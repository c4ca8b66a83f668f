"""An S13 client, as an MME would behave: CER, ECRs, DPR.

The tests' independent MME: every message it sends is built, and every answer decoded,
with python-diameter, not with s13eir's own codec. The base protocol (waiting for the
CEA, answering DWRs, the DPR/DPA exchange) is the ``diameter.initiator`` core, driven
by the same asyncio shell as ``s13eir check`` (:mod:`s13eir.checker`: same results,
without python-diameter's import time).
"""

from __future__ import annotations

import itertools
import os
import time

from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogAnswer,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
    MeIdentityCheckRequest,
)

from .checker import CheckResult, ClientError, Initiator
from .diameter.constants import APP_S13, AVP_ERROR_MESSAGE, DISCONNECT_REBOOTING, SUCCESS, VENDOR_3GPP
from .diameter.header import Header

__all__ = ["CheckResult", "ClientError", "PythonDiameterMessages", "S13Client", "check_once"]

_MASK32 = 0xFFFFFFFF


def _error_message(msg: Message) -> str | None:
    # Error-Message is not in python-diameter's ECA attributes; it arrives as a plain AVP.
    for avp in msg.avps:
        if avp.code == AVP_ERROR_MESSAGE and not avp.vendor_id:
            return str(avp.value)
    return None


class PythonDiameterMessages:
    """The initiator core's base messages (DWA, DPA, DPR) as python-diameter encodes them."""

    def __init__(self, origin_host: str, origin_realm: str, state_id: int) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.state_id = state_id

    def dwa(self, request: Header) -> bytes:
        dwa = DeviceWatchdogAnswer()
        self._answer(dwa, request)
        dwa.origin_state_id = self.state_id
        return bytes(dwa.as_bytes())

    def dpa(self, request: Header) -> bytes:
        dpa = DisconnectPeerAnswer()
        self._answer(dpa, request)
        return bytes(dpa.as_bytes())

    def _answer(self, msg: Message, request: Header) -> None:
        msg.header.hop_by_hop_identifier = request.hop_by_hop
        msg.header.end_to_end_identifier = request.end_to_end
        msg.result_code = SUCCESS
        msg.origin_host = self.origin_host.encode()
        msg.origin_realm = self.origin_realm.encode()

    def dpr(self, cause: int, hop_by_hop: int, end_to_end: int) -> bytes:
        dpr = DisconnectPeerRequest()
        dpr.header.hop_by_hop_identifier = hop_by_hop
        dpr.header.end_to_end_identifier = end_to_end
        dpr.origin_host = self.origin_host.encode()
        dpr.origin_realm = self.origin_realm.encode()
        dpr.disconnect_cause = cause
        return bytes(dpr.as_bytes())


class S13Client:
    """A minimal MME over one TCP connection (asyncio streams; not a hot path)."""

    def __init__(self, origin_host: str, origin_realm: str, timeout: float = 5.0) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.timeout = timeout
        self.peer_realm = ""
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._state_id = int(time.time()) & _MASK32
        self._mme = Initiator(PythonDiameterMessages(origin_host, origin_realm, self._state_id), timeout)

    async def connect(self, host: str, port: int) -> Message:
        def cer(local_ip: str) -> bytes:
            msg = CapabilitiesExchangeRequest()
            self._ident(msg)
            msg.host_ip_address = [local_ip]
            msg.vendor_id = 0
            msg.product_name = "s13eir-check"
            msg.origin_state_id = self._state_id
            msg.supported_vendor_id = [VENDOR_3GPP]
            msg.vendor_specific_application_id = [
                VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=APP_S13)
            ]
            return bytes(msg.as_bytes())

        opened = await self._mme.connect(host, port, cer)
        cea = Message.from_bytes(opened.cea)
        self.peer_realm = cea.origin_realm.decode()
        return cea

    def _ident(self, msg: Message) -> None:
        msg.header.hop_by_hop_identifier = next(self._ids) & _MASK32
        msg.header.end_to_end_identifier = next(self._ids) & _MASK32
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

    def send(self, *msgs: Message) -> None:
        """Write requests in one go without waiting (a burst, as an MME under load)."""
        self._mme.send(b"".join(bytes(m.as_bytes()) for m in msgs))

    async def request(self, msg: Message) -> Message:
        """Send a request and return its answer, answering DWRs that arrive meanwhile."""
        self.send(msg)
        return await self.request_answer(msg.header.hop_by_hop_identifier)

    async def request_answer(self, hop_by_hop: int) -> Message:
        """The answer with this hop-by-hop id (answers may come in any order)."""
        return Message.from_bytes(await self._mme.answer(hop_by_hop))

    async def disconnect(self) -> None:
        """DPR, wait for the DPA, close."""
        await self._mme.disconnect(DISCONNECT_REBOOTING, next(self._ids) & _MASK32, next(self._ids) & _MASK32)

    async def close(self) -> None:
        await self._mme.close()


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
