"""Raw AVP encoding and decoding (RFC 6733 §4).

Answers are built from these primitives rather than from a general message
object model because an answer must echo parts of the request byte for byte
(Proxy-Info with its unknown inner AVPs, the offending AVP in Failed-AVP), and
because this path runs for every request.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import NamedTuple

from .constants import AVP_FLAG_MANDATORY, AVP_FLAG_VENDOR

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_AVP_HEAD = struct.Struct("!II")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class Avp(NamedTuple):
    """One decoded AVP. ``raw`` is the whole AVP as received (header + data, no padding)."""

    code: int
    flags: int
    vendor: int
    data: bytes
    raw: bytes

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_FLAG_MANDATORY)

    @property
    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)


class AvpLengthError(Exception):
    """An AVP length that does not fit (5014). ``failed`` is what Failed-AVP should carry."""

    def __init__(self, failed: bytes, detail: str, partial: list[Avp] | None = None) -> None:
        super().__init__(detail)
        self.failed = failed
        self.partial = partial or []  # the AVPs before the bad one, e.g. to echo Session-Id


def decode_avps(buf: bytes, start: int = 0, end: int | None = None) -> list[Avp]:
    """Decode the AVPs laid out in ``buf[start:end]``; padding is skipped."""
    if end is None:
        end = len(buf)
    avps: list[Avp] = []
    pos = start
    unpack = _AVP_HEAD.unpack_from
    while pos < end:
        if end - pos < 8:
            raise AvpLengthError(_truncated(buf, pos, end), f"{end - pos} stray bytes after the last AVP", avps)
        code, fl = unpack(buf, pos)
        flags = fl >> 24
        length = fl & 0xFFFFFF
        head = 12 if flags & AVP_FLAG_VENDOR else 8
        if length < head or pos + length > end:
            raise AvpLengthError(_minimal(buf, pos, end, head), f"AVP {code} has length {length}", avps)
        vendor = _U32.unpack_from(buf, pos + 8)[0] if head == 12 else 0
        raw = bytes(buf[pos : pos + length])
        avps.append(Avp(code, flags, vendor, raw[head:], raw))
        pos += (length + 3) & ~3
    return avps


def _minimal(buf: bytes, pos: int, end: int, head: int) -> bytes:
    # RFC 6733 §7.5: for a bad length, send the AVP header with a zero-filled minimal
    # payload. We keep code, flags and vendor and make the length self-consistent.
    if end - pos < head:
        return _truncated(buf, pos, end)
    code, fl = _AVP_HEAD.unpack_from(buf, pos)
    flags = fl >> 24
    vendor = _U32.unpack_from(buf, pos + 8)[0] if head == 12 else None
    return encode(code, b"", vendor=vendor, flags=flags)


def _truncated(buf: bytes, pos: int, end: int) -> bytes:
    code = int.from_bytes(bytes(buf[pos : pos + 4]).ljust(4, b"\0"), "big")
    return encode(code, b"", flags=0)


def encode(code: int, data: bytes, *, vendor: int | None = None, flags: int | None = None) -> bytes:
    """One AVP with padding. M is set unless ``flags`` says otherwise; V follows ``vendor``."""
    if flags is None:
        flags = AVP_FLAG_MANDATORY
    if vendor:
        flags |= AVP_FLAG_VENDOR
        length = 12 + len(data)
        head = _AVP_HEAD.pack(code, (flags << 24) | length) + _U32.pack(vendor)
    else:
        flags &= ~AVP_FLAG_VENDOR
        length = 8 + len(data)
        head = _AVP_HEAD.pack(code, (flags << 24) | length)
    return head + data + _PAD[length & 3]


def pad(raw: bytes) -> bytes:
    """Re-pad an AVP taken from ``Avp.raw`` for inclusion in a message."""
    return raw + _PAD[len(raw) & 3]


def u32(code: int, value: int, *, vendor: int | None = None, mandatory: bool = True) -> bytes:
    return encode(code, _U32.pack(value), vendor=vendor, flags=AVP_FLAG_MANDATORY if mandatory else 0)


def utf8(code: int, value: str | bytes, *, vendor: int | None = None, mandatory: bool = True) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return encode(code, data, vendor=vendor, flags=AVP_FLAG_MANDATORY if mandatory else 0)


def grouped(code: int, children: Iterable[bytes], *, vendor: int | None = None, mandatory: bool = True) -> bytes:
    return encode(code, b"".join(children), vendor=vendor, flags=AVP_FLAG_MANDATORY if mandatory else 0)


def address(code: int, ip: str, *, mandatory: bool = True) -> bytes:
    """An Address AVP (RFC 6733 §4.3.1): the IANA address family, then the address."""
    addr = ipaddress.ip_address(ip)
    data = (b"\0\1" if addr.version == 4 else b"\0\2") + addr.packed
    return encode(code, data, flags=AVP_FLAG_MANDATORY if mandatory else 0)


def read_u32(data: bytes) -> int:
    return int(_U32.unpack(data)[0])


def read_u64(data: bytes) -> int:
    return int(_U64.unpack(data)[0])
