"""The 20-byte Diameter header (RFC 6733 §3), read and written with struct."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .constants import APP_BASE, FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST

HEADER_LENGTH = 20
_HEADER = struct.Struct("!IIIII")


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    length: int
    flags: int
    command_code: int
    application_id: int
    hop_by_hop: int
    end_to_end: int

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)


def parse_header(data: bytes, offset: int = 0) -> Header:
    """Decode the header at ``offset``; the caller guarantees 20 bytes are there."""
    w0, w1, app, hbh, e2e = _HEADER.unpack_from(data, offset)
    return Header(w0 >> 24, w0 & 0xFFFFFF, w1 >> 24, w1 & 0xFFFFFF, app, hbh, e2e)


def pack_header(length: int, flags: int, command_code: int, application_id: int, hbh: int, e2e: int) -> bytes:
    return _HEADER.pack(0x01000000 | length, (flags << 24) | command_code, application_id, hbh, e2e)


def base_message(flags: int, command_code: int, hbh: int, e2e: int, avps: Iterable[bytes]) -> bytes:
    """A base-protocol message (Application-Id 0) from its encoded AVPs: the node's
    DWR/DWA/DPR/DPA (``base_messages``) and the load generator's MMEs' (``loadgen.wire``)."""
    body = b"".join(avps)
    return pack_header(HEADER_LENGTH + len(body), flags, command_code, APP_BASE, hbh, e2e) + body
