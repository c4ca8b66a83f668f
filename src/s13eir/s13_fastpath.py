"""The ECR fast path: a struct scanner for the common, well-formed ECR.

``scan_ecr`` walks the AVP headers of an ECR without building objects and returns
the few fields S13 needs, or None to decline. It declines anything it does not
fully understand (an AVP outside the short list below, a repeated AVP, a non-ASCII
string, Proxy-Info, a Destination-Host, a malformed IMEI, a bad length...), and
the full path (base screening, dictionary validation, ``s13.MeIdentityCheck``)
then answers, with the right error where there is one. When it accepts, the
answer it leads to is byte-identical to the full path's (tests/test_fastpath.py
checks this with hypothesis).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .diameter.constants import FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST

_AVP = struct.Struct("!II")
_U32 = struct.Struct("!I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_VENDOR = 10415

# Top-level AVPs the scanner handles, by code (vendor 0 unless noted).
_SESSION_ID = 263
_AUTH_SESSION_STATE = 277
_ORIGIN_HOST = 264
_ORIGIN_REALM = 296
_DESTINATION_REALM = 283
_USER_NAME = 1
_TERMINAL_INFORMATION = 1401  # vendor 10415
_IMEI = 1402  # vendor 10415, inside Terminal-Information
_SOFTWARE_VERSION = 1403  # vendor 10415, inside Terminal-Information
_REQUIRED = 0b111111  # Session-Id, Auth-Session-State, Origin-Host, Origin-Realm, Destination-Realm, TI
_BIT = {_SESSION_ID: 1, _AUTH_SESSION_STATE: 2, _ORIGIN_HOST: 4, _ORIGIN_REALM: 8, _DESTINATION_REALM: 16}
_TI_BIT = 32
_USER_BIT = 64


class FastEcr(NamedTuple):
    session_id_avp: bytes  # the Session-Id AVP as received, padded: echoed in the answer
    imei14: str
    imsi: str | None


def scan_ecr(frame: bytes) -> FastEcr | None:
    """The ECR's Session-Id, 14-digit IMEI key and IMSI, or None to decline."""
    if frame[4] & (FLAG_REQUEST | FLAG_PROXIABLE | FLAG_ERROR) != FLAG_REQUEST | FLAG_PROXIABLE:
        return None
    end = len(frame)
    pos = 20
    seen = 0
    unpack = _AVP.unpack_from
    sid = b""
    imei = b""
    imsi: str | None = None
    while pos < end:
        if end - pos < 8:
            return None
        code, fl = unpack(frame, pos)
        length = fl & 0xFFFFFF
        nxt = pos + ((length + 3) & ~3)
        if fl & 0x80000000:  # V bit
            if code != _TERMINAL_INFORMATION or seen & _TI_BIT or length < 12 or pos + length > end:
                return None
            if _U32.unpack_from(frame, pos + 8)[0] != _VENDOR:
                return None
            imei = _scan_terminal_information(frame, pos + 12, pos + length)
            if not imei:
                return None
            seen |= _TI_BIT
            pos = nxt
            continue
        if length < 8 or pos + length > end:
            return None
        data = frame[pos + 8 : pos + length]
        if code == _USER_NAME:
            if seen & _USER_BIT or not data.isascii():
                return None
            seen |= _USER_BIT
            if 5 <= len(data) <= 15 and data.isdigit():
                imsi = data.decode()
            pos = nxt
            continue
        bit = _BIT.get(code)
        if bit is None or seen & bit:
            return None
        seen |= bit
        if code == _AUTH_SESSION_STATE:
            if length != 12 or _U32.unpack(data)[0] > 1:
                return None
        elif not data.isascii() or (code != _SESSION_ID and not data):
            return None
        elif code == _SESSION_ID:
            # Echoed with zero padding, as the full path re-pads it (wire padding may be junk).
            sid = frame[pos : pos + length] + _PAD[length & 3]
        pos = nxt
    if seen & _REQUIRED != _REQUIRED:
        return None
    return FastEcr(sid, imei[:14].decode(), imsi)


def _scan_terminal_information(frame: bytes, pos: int, end: int) -> bytes:
    """The IMEI inside Terminal-Information (14 or 15 ASCII digits), or b"" to decline."""
    imei = b""
    have_sv = False
    unpack = _AVP.unpack_from
    while pos < end:
        if end - pos < 12:
            return b""
        code, fl = unpack(frame, pos)
        length = fl & 0xFFFFFF
        if not fl & 0x80000000 or length < 12 or pos + length > end:
            return b""
        if _U32.unpack_from(frame, pos + 8)[0] != _VENDOR:
            return b""
        data = frame[pos + 12 : pos + length]
        if code == _IMEI:
            if imei or len(data) not in (14, 15) or not (data.isdigit() and data.isascii()):
                return b""
            imei = data
        elif code == _SOFTWARE_VERSION:
            if have_sv or not data.isascii():
                return b""
            have_sv = True
        else:
            return b""
        pos += (length + 3) & ~3
    return imei
