"""A raw MME for tests: asyncio streams, arbitrary bytes out, framed answers in.

Good messages are built with python-diameter (an implementation independent of
the server); broken ones are built by hand with struct. Every answer is decoded
twice: with python-diameter's ``Message.from_bytes`` (the oracle) and with a
small raw AVP reader here, so that header bits, identifiers and the exact bytes
of echoed AVPs can be checked. An MME opened with ``Mme.open`` runs the base protocol
on the initiator core that ``s13eir check`` and the load generator use.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diameter.message import Message
from diameter.message.avp import Avp as PdAvp
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
    MeIdentityCheckRequest,
)

from s13eir.client import PythonDiameterMessages
from s13eir.diameter.initiator import CapabilitiesExchanged, InitiatorConnection, InitiatorState
from tests.conftest import EIR_REALM, MME_HOST, MME_REALM

# Numbers written out here on purpose instead of imported from the server code.
VENDOR_3GPP = 10415
APP_S13 = 16777252
APP_RELAY = 0xFFFFFFFF
CMD_CER = 257
CMD_DWR = 280
CMD_DPR = 282
CMD_ECR = 324

FLAG_R, FLAG_P, FLAG_E, FLAG_T = 0x80, 0x40, 0x20, 0x10
AVP_V, AVP_M = 0x80, 0x40

AVP_USER_NAME = 1
AVP_PROXY_STATE = 33
AVP_HOST_IP_ADDRESS = 257
AVP_AUTH_APPLICATION_ID = 258
AVP_ACCT_APPLICATION_ID = 259
AVP_VSAI = 260
AVP_SESSION_ID = 263
AVP_ORIGIN_HOST = 264
AVP_SUPPORTED_VENDOR_ID = 265
AVP_VENDOR_ID = 266
AVP_FIRMWARE_REVISION = 267
AVP_RESULT_CODE = 268
AVP_PRODUCT_NAME = 269
AVP_AUTH_SESSION_STATE = 277
AVP_ORIGIN_STATE_ID = 278
AVP_FAILED_AVP = 279
AVP_PROXY_HOST = 280
AVP_ERROR_MESSAGE = 281
AVP_ROUTE_RECORD = 282
AVP_DESTINATION_REALM = 283
AVP_PROXY_INFO = 284
AVP_DESTINATION_HOST = 293
AVP_ORIGIN_REALM = 296
AVP_EXPERIMENTAL_RESULT = 297
AVP_EXPERIMENTAL_RESULT_CODE = 298
AVP_TERMINAL_INFORMATION = 1401
AVP_IMEI = 1402
AVP_SOFTWARE_VERSION = 1403
AVP_EQUIPMENT_STATUS = 1445

WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2
# config/lists/README.md
IMEI_BLACK = "35209900176148"
IMEI_GREY = "35290611000001"
IMEI_UNLISTED = "35450712345675"  # WHITELISTED by default, EQUIPMENT_UNKNOWN when restrictive
# Requests built here carry IMEI_UNLISTED unless told otherwise: a well-formed one is then
# answered by the server's fast path, so a broken one tests that the fast path declines it.

_ids = itertools.count(int.from_bytes(os.urandom(3), "big") << 4)


def next_id() -> int:
    return next(_ids) & 0xFFFFFFFF


# -- raw encoding --------------------------------------------------------------


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def avp(
    code: int,
    data: bytes,
    *,
    vendor: int | None = None,
    flags: int | None = None,
    length: int | None = None,
    padded: bool = True,
) -> bytes:
    """One AVP. M set unless ``flags`` says otherwise; V follows ``vendor``.
    ``length`` overrides the length field (for broken AVPs); ``padded`` adds the
    padding to a multiple of 4."""
    if flags is None:
        flags = AVP_M
    if vendor is not None:
        flags |= AVP_V
    head_len = 12 if vendor is not None else 8
    real = head_len + len(data)
    fl = (flags << 24) | ((real if length is None else length) & 0xFFFFFF)
    head = struct.pack("!II", code, fl) + (struct.pack("!I", vendor) if vendor is not None else b"")
    out = head + data
    return pad4(out) if padded else out


def u32(code: int, value: int, *, vendor: int | None = None, flags: int | None = None) -> bytes:
    return avp(code, struct.pack("!I", value), vendor=vendor, flags=flags)


def utf8(code: int, value: str | bytes, *, vendor: int | None = None, flags: int | None = None) -> bytes:
    return avp(code, value.encode() if isinstance(value, str) else value, vendor=vendor, flags=flags)


def grouped(code: int, *children: bytes, vendor: int | None = None, flags: int | None = None) -> bytes:
    return avp(code, b"".join(children), vendor=vendor, flags=flags)


def header(
    length: int,
    flags: int,
    command: int,
    app: int,
    hbh: int,
    e2e: int,
    version: int = 1,
) -> bytes:
    word0 = (version << 24) | (length & 0xFFFFFF)
    return struct.pack("!IIIII", word0, (flags << 24) | command, app, hbh & 0xFFFFFFFF, e2e & 0xFFFFFFFF)


def message(
    flags: int,
    command: int,
    app: int,
    avps: Iterable[bytes],
    *,
    hbh: int | None = None,
    e2e: int | None = None,
    version: int = 1,
    length: int | None = None,
) -> bytes:
    body = b"".join(avps)
    real = 20 + len(body)
    return (
        header(
            real if length is None else length,
            flags,
            command,
            app,
            next_id() if hbh is None else hbh,
            next_id() if e2e is None else e2e,
            version,
        )
        + body
    )


def split(frame: bytes) -> tuple[bytes, list[bytes]]:
    """A well-formed message as (20-byte header, [padded AVP bytes])."""
    out: list[bytes] = []
    pos = 20
    while pos < len(frame):
        length = int.from_bytes(frame[pos + 5 : pos + 8], "big")
        step = (length + 3) & ~3
        out.append(frame[pos : pos + step])
        pos += step
    return frame[:20], out


def join(head: bytes, avps: Iterable[bytes]) -> bytes:
    """Reassemble a message and fix its length field."""
    body = b"".join(avps)
    length = 20 + len(body)
    return bytes([head[0]]) + length.to_bytes(3, "big") + head[4:20] + body


def with_avps(frame: bytes, *extra: bytes, at: int | None = None) -> bytes:
    """``frame`` with raw AVPs inserted at index ``at`` (default: appended)."""
    head, avps = split(frame)
    if at is None:
        avps.extend(extra)
    else:
        avps[at:at] = extra
    return join(head, avps)


def set_flags(frame: bytes, flags: int) -> bytes:
    return frame[:4] + bytes([flags]) + frame[5:]


def avp_code(raw: bytes) -> int:
    return int.from_bytes(raw[:4], "big")


# -- raw decoding --------------------------------------------------------------


@dataclass(frozen=True)
class RawAvp:
    code: int
    flags: int
    vendor: int
    data: bytes
    raw: bytes  # as received: header + data, no padding

    @property
    def padded(self) -> bytes:
        return pad4(self.raw)

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_M)

    def children(self) -> list[RawAvp]:
        return decode_avps(self.data)

    def u32(self) -> int:
        assert len(self.data) == 4, f"AVP {self.code} is not 4 bytes: {self.data!r}"
        return int.from_bytes(self.data, "big")

    def find(self, code: int, vendor: int = 0) -> list[RawAvp]:
        return [a for a in self.children() if a.code == code and a.vendor == vendor]


class RawDecodeError(AssertionError):
    pass


def decode_avps(buf: bytes, start: int = 0) -> list[RawAvp]:
    out: list[RawAvp] = []
    pos = start
    while pos < len(buf):
        if len(buf) - pos < 8:
            raise RawDecodeError(f"{len(buf) - pos} stray bytes at {pos}")
        code, fl = struct.unpack_from("!II", buf, pos)
        flags, length = fl >> 24, fl & 0xFFFFFF
        head = 12 if flags & AVP_V else 8
        if length < head or pos + length > len(buf):
            raise RawDecodeError(f"AVP {code} at {pos} has length {length}")
        vendor = struct.unpack_from("!I", buf, pos + 8)[0] if head == 12 else 0
        raw = bytes(buf[pos : pos + length])
        out.append(RawAvp(code, flags, vendor, raw[head:], raw))
        pos += (length + 3) & ~3
    return out


def lenient_avps(frame: bytes) -> list[RawAvp]:
    """The top-level AVPs of a message, as far as they can be read."""
    out: list[RawAvp] = []
    pos = 20
    while pos + 8 <= len(frame):
        try:
            first = decode_avps(frame[pos : pos + ((int.from_bytes(frame[pos + 5 : pos + 8], "big") + 3) & ~3)])
        except RawDecodeError:
            break
        if len(first) != 1:
            break
        out.append(first[0])
        pos += len(first[0].padded)
    return out


@dataclass
class Answer:
    """One frame from the server, decoded both ways."""

    raw: bytes
    version: int
    length: int
    flags: int
    command: int
    app: int
    hbh: int
    e2e: int
    avps: list[RawAvp]
    msg: Any = field(repr=False)  # python-diameter Message

    @classmethod
    def parse(cls, frame: bytes) -> Answer:
        v_len, f_cmd, app, hbh, e2e = struct.unpack_from("!IIIII", frame)
        if v_len >> 24 != 1 or (v_len & 0xFFFFFF) != len(frame):
            raise RawDecodeError(f"bad header {frame[:20].hex()}")
        avps = decode_avps(frame, 20)
        msg = Message.from_bytes(frame)  # the oracle: must not raise
        for a in Message.from_bytes(frame, plain_msg=True).avps:  # and every value must decode
            _touch(a)
        return cls(frame, v_len >> 24, v_len & 0xFFFFFF, f_cmd >> 24, f_cmd & 0xFFFFFF, app, hbh, e2e, avps, msg)

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def e_bit(self) -> bool:
        return bool(self.flags & FLAG_E)

    @property
    def p_bit(self) -> bool:
        return bool(self.flags & FLAG_P)

    def find(self, code: int, vendor: int = 0) -> list[RawAvp]:
        return [a for a in self.avps if a.code == code and a.vendor == vendor]

    def one(self, code: int, vendor: int = 0) -> RawAvp:
        found = self.find(code, vendor)
        assert len(found) == 1, f"expected one AVP {code}/{vendor}, found {len(found)} in {self}"
        return found[0]

    @property
    def result_code(self) -> int | None:
        found = self.find(AVP_RESULT_CODE)
        assert len(found) <= 1, "more than one Result-Code"
        return found[0].u32() if found else None

    @property
    def experimental_result(self) -> tuple[int, int] | None:
        found = self.find(AVP_EXPERIMENTAL_RESULT)
        if not found:
            return None
        g = found[0]
        return g.find(AVP_VENDOR_ID)[0].u32(), g.find(AVP_EXPERIMENTAL_RESULT_CODE)[0].u32()

    @property
    def equipment_status(self) -> int | None:
        found = self.find(AVP_EQUIPMENT_STATUS, VENDOR_3GPP)
        return found[0].u32() if found else None

    @property
    def failed_avps(self) -> list[RawAvp]:
        """The AVPs inside the (single) Failed-AVP."""
        return self.one(AVP_FAILED_AVP).children()

    @property
    def error_message(self) -> str | None:
        found = self.find(AVP_ERROR_MESSAGE)
        return found[0].data.decode(errors="replace") if found else None

    def __str__(self) -> str:
        return (
            f"<answer cmd={self.command} app={self.app} flags=0x{self.flags:02x} hbh=0x{self.hbh:08x} "
            f"rc={self.result_code} exp={self.experimental_result} msg={self.error_message!r}>"
        )


def _touch(a: PdAvp) -> None:
    value = a.value  # raises AvpDecodeError when python-diameter cannot read it
    if isinstance(value, list) and a.code != AVP_FAILED_AVP:  # Failed-AVP may legitimately hold broken AVPs
        for inner in value:
            # Inside Proxy-Info only Proxy-Host and Proxy-State are the EIR's to check: the
            # relay's own AVPs are echoed byte for byte (RFC 6733 §6.2), whatever they hold.
            if a.code == AVP_PROXY_INFO and inner.code not in (AVP_PROXY_HOST, AVP_PROXY_STATE):
                continue
            _touch(inner)


def request_ids(frame: bytes) -> tuple[int, int, int]:
    """(command code, hop-by-hop, end-to-end) of a raw request."""
    _, f_cmd, _, hbh, e2e = struct.unpack_from("!IIIII", frame)
    return f_cmd & 0xFFFFFF, hbh, e2e


# -- python-diameter builders ----------------------------------------------------


def _ident(msg: Message, origin_host: str, origin_realm: str, hbh: int | None, e2e: int | None) -> None:
    msg.header.hop_by_hop_identifier = next_id() if hbh is None else hbh
    msg.header.end_to_end_identifier = next_id() if e2e is None else e2e
    msg.origin_host = origin_host.encode()
    msg.origin_realm = origin_realm.encode()


def cer(
    origin_host: str = MME_HOST,
    origin_realm: str = MME_REALM,
    *,
    state_id: int | None = None,
    apps: Sequence[int] | None = None,
    vendor_apps: Sequence[tuple[int, int]] | None = None,
    hbh: int | None = None,
    e2e: int | None = None,
) -> CapabilitiesExchangeRequest:
    """A CER as an MME sends it: S13 in a Vendor-Specific-Application-Id unless told otherwise."""
    msg = CapabilitiesExchangeRequest()
    _ident(msg, origin_host, origin_realm, hbh, e2e)
    msg.host_ip_address = ["127.0.0.1"]
    msg.vendor_id = 0
    msg.product_name = "s13eir-test-mme"
    msg.origin_state_id = int(time.time()) if state_id is None else state_id
    msg.supported_vendor_id = [VENDOR_3GPP]
    if apps is not None:
        msg.auth_application_id = list(apps)
    if vendor_apps is None and apps is None:
        vendor_apps = [(VENDOR_3GPP, APP_S13)]
    msg.vendor_specific_application_id = [
        VendorSpecificApplicationId(vendor_id=v, auth_application_id=a) for v, a in (vendor_apps or [])
    ]
    return msg


def ecr(
    imei: str | None = IMEI_UNLISTED,
    imsi: str | None = None,
    sv: str | None = None,
    *,
    origin_host: str = MME_HOST,
    origin_realm: str = MME_REALM,
    destination_realm: str = EIR_REALM,
    destination_host: str | None = None,
    terminal_information: bool = True,
    hbh: int | None = None,
    e2e: int | None = None,
) -> MeIdentityCheckRequest:
    msg = MeIdentityCheckRequest()
    msg.header.application_id = APP_S13  # python-diameter leaves it 0
    _ident(msg, origin_host, origin_realm, hbh, e2e)
    msg.session_id = f"{origin_host};{int(time.time())};{next_id()}"
    msg.auth_session_state = 1
    msg.destination_realm = destination_realm.encode()
    if destination_host is not None:
        msg.destination_host = destination_host.encode()
    if terminal_information:
        msg.terminal_information = TerminalInformation(imei=imei, software_version=sv)
    if imsi is not None:
        msg.user_name = imsi
    return msg


def dwr(origin_host: str = MME_HOST, origin_realm: str = MME_REALM, state_id: int = 1) -> DeviceWatchdogRequest:
    msg = DeviceWatchdogRequest()
    _ident(msg, origin_host, origin_realm, None, None)
    msg.origin_state_id = state_id
    return msg


def _success_answer(msg: Any, request: Answer, origin_host: str, origin_realm: str) -> bytes:
    msg.header.hop_by_hop_identifier = request.hbh
    msg.header.end_to_end_identifier = request.e2e
    msg.result_code = 2001
    msg.origin_host = origin_host.encode()
    msg.origin_realm = origin_realm.encode()
    return bytes(msg.as_bytes())


def dwa_for(request: Answer, origin_host: str = MME_HOST, origin_realm: str = MME_REALM) -> bytes:
    return _success_answer(DeviceWatchdogAnswer(), request, origin_host, origin_realm)


def dpa_for(request: Answer, origin_host: str = MME_HOST, origin_realm: str = MME_REALM) -> bytes:
    return _success_answer(DisconnectPeerAnswer(), request, origin_host, origin_realm)


def dpr(origin_host: str = MME_HOST, origin_realm: str = MME_REALM, cause: int = 0) -> DisconnectPeerRequest:
    msg = DisconnectPeerRequest()
    _ident(msg, origin_host, origin_realm, None, None)
    msg.disconnect_cause = cause
    return msg


def raw_ecr_avps(
    imei: str = IMEI_UNLISTED, *, session_id: str | None = None, imsi: str | None = None, sv: str | None = None
) -> list[bytes]:
    """The AVPs of a good ECR, built by hand, in the order of the TS 29.272 format."""
    ti = [utf8(AVP_IMEI, imei, vendor=VENDOR_3GPP)]
    if sv is not None:
        ti.append(utf8(AVP_SOFTWARE_VERSION, sv, vendor=VENDOR_3GPP))
    out = [
        utf8(AVP_SESSION_ID, session_id or f"{MME_HOST};{next_id()}"),
        u32(AVP_AUTH_SESSION_STATE, 1),
        utf8(AVP_ORIGIN_HOST, MME_HOST),
        utf8(AVP_ORIGIN_REALM, MME_REALM),
        utf8(AVP_DESTINATION_REALM, EIR_REALM),
        grouped(AVP_TERMINAL_INFORMATION, *ti, vendor=VENDOR_3GPP),
    ]
    if imsi is not None:
        out.append(utf8(AVP_USER_NAME, imsi))
    return out


def raw_ecr(avps: Iterable[bytes], *, flags: int = FLAG_R | FLAG_P, app: int = APP_S13, **kw: Any) -> bytes:
    return message(flags, CMD_ECR, app, avps, **kw)


def to_bytes(msg: Message | bytes) -> bytes:
    return msg if isinstance(msg, bytes) else bytes(msg.as_bytes())


# -- the connection ----------------------------------------------------------------


class Closed(AssertionError):
    """The server closed the connection while an answer was awaited."""


async def assert_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Wait (bounded) for EOF from the server; returns whatever arrived before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    data = b""
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"the server did not close the connection within {timeout} s")
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            raise AssertionError(f"the server did not close the connection within {timeout} s") from None
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk


def frames_in(data: bytes) -> list[bytes]:
    """Split bytes received from the server into frames; they must frame exactly."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 20, f"{len(data) - pos} stray bytes from the server: {data[pos:].hex()}"
        assert data[pos] == 1, f"server sent version {data[pos]}"
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        assert length >= 20 and length % 4 == 0 and pos + length <= len(data), f"server frame length {length}"
        out.append(data[pos : pos + length])
        pos += length
    return out


class Mme:
    """One TCP connection to the EIR."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = bytearray()
        self.cea: Answer | None = None
        self.core: InitiatorConnection | None = None  # after ``open``

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 5.0) -> Mme:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    @classmethod
    async def connect_to(cls, eir: Any, timeout: float = 5.0) -> Mme:
        """Over TCP to a running node (``host``/``port``), or in memory to a
        ``tests.virtual_eir.VirtualEir`` (``streams()``)."""
        if hasattr(eir, "streams"):
            return cls(*eir.streams())
        return await cls.connect(eir.host, eir.port, timeout)

    @classmethod
    async def open_on(cls, eir: Any, *, timeout: float = 5.0, **cer_kw: Any) -> Mme:
        """``connect_to`` and a successful capabilities exchange, as ``open``."""
        return await (await cls.connect_to(eir, timeout))._exchange(timeout, **cer_kw)

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 5.0, **cer_kw: Any) -> Mme:
        """Connect and complete a successful capabilities exchange. From then on, the
        initiator core (``diameter.initiator``) answers the EIR's DWRs and DPRs, with
        python-diameter's messages."""
        return await (await cls.connect(host, port, timeout))._exchange(timeout, **cer_kw)

    async def _exchange(self, timeout: float, **cer_kw: Any) -> Mme:
        mme = self
        request = cer(**cer_kw)
        messages = PythonDiameterMessages(
            request.origin_host.decode(), request.origin_realm.decode(), request.origin_state_id
        )
        loop = asyncio.get_running_loop()
        core = InitiatorConnection(messages, to_bytes(request), loop.time(), cea_timeout=timeout)
        await mme.send(core.data_to_send())
        while core.state is InitiatorState.WAIT_CEA:
            core.receive_frame(await mme.read_frame(timeout), loop.time())
            await mme.send(core.data_to_send())
        event = core.next_event()
        assert isinstance(event, CapabilitiesExchanged), f"CER refused: {event}"
        mme.cea = Answer.parse(event.cea)
        mme.core = core
        return mme

    async def send(self, data: bytes | Message) -> None:
        self.writer.write(to_bytes(data))
        await self.writer.drain()

    async def send_slowly(self, data: bytes, chunk: int = 1, pause: float = 0.001) -> None:
        for i in range(0, len(data), chunk):
            self.writer.write(data[i : i + chunk])
            await self.writer.drain()
            await asyncio.sleep(pause)

    async def read_frame(self, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if len(self._buf) >= 4:
                assert self._buf[0] == 1, f"server sent version {self._buf[0]}: {bytes(self._buf[:20]).hex()}"
                length = int.from_bytes(self._buf[1:4], "big")
                assert length >= 20 and length % 4 == 0, f"server sent message length {length}"
                if len(self._buf) >= length:
                    frame = bytes(self._buf[:length])
                    del self._buf[:length]
                    return frame
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout} s")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                raise TimeoutError(f"no answer within {timeout} s") from None
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                raise Closed(f"connection closed by the server ({len(self._buf)} bytes pending)")
            self._buf += chunk

    async def read_answer(self, timeout: float = 5.0) -> Answer:
        return Answer.parse(await self.read_frame(timeout))

    async def request(self, data: bytes | Message, timeout: float = 5.0, *, answer_dwr: bool = True) -> Answer:
        """Send a request and return the answer with its hop-by-hop id (other frames are
        checked to be answerable DWRs when ``answer_dwr``, else returned as they come)."""
        raw = to_bytes(data)
        _, hbh, e2e = request_ids(raw)
        await self.send(raw)
        while True:
            frame = await self.read_frame(timeout)
            ans = Answer.parse(frame)
            if ans.is_request and ans.command == CMD_DWR and answer_dwr:
                if self.core is not None:
                    self.core.receive_frame(frame, asyncio.get_running_loop().time())
                    await self.send(self.core.data_to_send())
                else:  # a connection that skipped ``open``: no core to answer for it
                    await self.send(dwa_for(ans))
                continue
            assert not ans.is_request, f"unexpected request from the server: {ans}"
            assert (ans.hbh, ans.e2e) == (hbh, e2e), f"answer ids {ans.hbh:x}/{ans.e2e:x} != {hbh:x}/{e2e:x}"
            return ans

    async def assert_closed(self, timeout: float = 5.0) -> list[Answer]:
        """EOF within ``timeout``; returns the frames that came before it."""
        data = bytes(self._buf) + await assert_closed(self.reader, timeout)
        self._buf.clear()
        return [Answer.parse(f) for f in frames_in(data)]

    async def assert_silent(self, seconds: float) -> None:
        """Nothing arrives and the connection stays open for ``seconds``."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {chunk!r}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def check_answer_header(ans: Answer, request: bytes, *, e_bit: bool | None = None) -> None:
    """RFC 6733 §6.2: R clear, P copied, command and application and ids echoed."""
    _, f_cmd, app, hbh, e2e = struct.unpack_from("!IIIII", request)
    assert not ans.is_request, ans
    assert ans.command == f_cmd & 0xFFFFFF, ans
    assert ans.app == app, ans
    assert (ans.hbh, ans.e2e) == (hbh, e2e), ans
    assert ans.p_bit == bool((f_cmd >> 24) & FLAG_P), ans
    assert not ans.flags & FLAG_T, ans
    assert ans.flags & 0x0F == 0, f"reserved header bits set: {ans}"
    if e_bit is not None:
        assert ans.e_bit is e_bit, f"E-bit should be {e_bit}: {ans}"
    rc = ans.result_code
    if rc is not None:
        assert ans.e_bit == (3000 <= rc < 4000), f"E-bit must be set exactly on 3xxx: {ans}"
