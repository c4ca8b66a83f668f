"""The ECR fast path: a struct scanner for the common, well-formed ECR.

``scan_ecr`` walks the AVP headers of an ECR without building objects and returns
the few fields S13 needs, or None to decline. It declines anything it does not
fully understand (an AVP outside the short list below, a repeated AVP, a non-ASCII
string, Proxy-Info, a Destination-Host, a malformed IMEI, a bad length...), and
the full path (base screening, dictionary validation, ``s13.MeIdentityCheck``)
then answers, with the right error where there is one. When it accepts, the
answer it leads to is byte-identical to the full path's (tests/s13/test_fastpath.py
checks this with hypothesis).

``Layout`` remembers an accepted ECR's layout, so that the next ECRs from the same
MME, laid out the same way, are read with a handful of byte compares instead.
"""

from __future__ import annotations

import struct

import msgspec

from ..diameter.constants import FLAG_ERROR, FLAG_PROXIABLE, FLAG_REQUEST

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
_OC_SUPPORTED_FEATURES = 621  # RFC 7683: an MME speaking DOIC puts it in every request
_OC_FEATURE_VECTOR = 622
_OC_BIT = 128
_REQUIRED = 0b111111  # Session-Id, Auth-Session-State, Origin-Host, Origin-Realm, Destination-Realm, TI
_BIT = {_SESSION_ID: 1, _AUTH_SESSION_STATE: 2, _ORIGIN_HOST: 4, _ORIGIN_REALM: 8, _DESTINATION_REALM: 16}
_TI_BIT = 32
_FLAGS_CHECKED = FLAG_REQUEST | FLAG_PROXIABLE | FLAG_ERROR  # T and reserved bits do not matter
_FLAGS_WANTED = FLAG_REQUEST | FLAG_PROXIABLE
_USER_BIT = 64


class FastEcr(msgspec.Struct, frozen=True, gc=False):
    session_id_avp: bytes  # the Session-Id AVP as received, padded: echoed in the answer
    imei14: str
    imsi: str | None
    # The rest is kept as the byte slices the scan took anyway and decoded only when the
    # answer is logged (a listed phone): a whitelisted answer never needs them.
    session_id: bytes
    imei: bytes  # as received, 14 or 15 digits
    software_version: bytes | None
    origin_host: bytes
    origin_realm: bytes
    # Where the variable data lies: Session-Id, IMEI, Software-Version and User-Name
    # values as (start, end) pairs, -1 when absent. ``Layout`` learns from it.
    spans: tuple[int, int, int, int, int, int, int, int]


def scan_ecr(frame: bytes) -> FastEcr | None:
    """What S13 needs from the ECR, or None to decline. The caller has checked the
    command code and application id, framing the version and length."""
    if frame[4] & _FLAGS_CHECKED != _FLAGS_WANTED:
        return None
    end = len(frame)
    pos = 20
    seen = 0
    unpack = _AVP.unpack_from
    sid = sid_data = host = realm = b""
    ti: tuple[bytes, bytes | None, int, int] | None = None
    imsi: str | None = None
    sid_at = user_at = user_end = -1
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
            ti = _scan_terminal_information(frame, pos + 12, pos + length)
            if ti is None:
                return None
            seen |= _TI_BIT
            pos = nxt
            continue
        if length < 8 or pos + length > end:
            return None
        data = frame[pos + 8 : pos + length]
        if code == _OC_SUPPORTED_FEATURES:
            # Only its canonical forms: empty, or one OC-Feature-Vector (the peer answers
            # with the DOIC AVPs; anything else is the full path's to judge).
            if seen & _OC_BIT or not (length == 8 or (length == 24 and _is_feature_vector(data))):
                return None
            seen |= _OC_BIT
            pos = nxt
            continue
        if code == _USER_NAME:
            if seen & _USER_BIT or not data.isascii():
                return None
            seen |= _USER_BIT
            if 5 <= len(data) <= 15 and data.isdigit():
                imsi = data.decode()
            user_at, user_end = pos + 8, pos + length
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
            sid_data = data
            sid_at = pos + 8
        elif code == _ORIGIN_HOST:
            host = data
        elif code == _ORIGIN_REALM:
            realm = data
        pos = nxt
    if seen & _REQUIRED != _REQUIRED or ti is None:
        return None
    imei, sv, imei_at, sv_at = ti
    spans = (sid_at, sid_at + len(sid_data), imei_at, imei_at + len(imei), sv_at,
             -1 if sv is None else sv_at + len(sv), user_at, user_end)  # fmt: skip
    return FastEcr(sid, imei[:14].decode(), imsi, sid_data, imei, sv, host, realm, spans)


def _is_feature_vector(data: bytes) -> bool:
    code, fl = _AVP.unpack_from(data, 0)
    return bool(code == _OC_FEATURE_VECTOR and fl & 0x80FFFFFF == 16)


def _scan_terminal_information(frame: bytes, pos: int, end: int) -> tuple[bytes, bytes | None, int, int] | None:
    """The IMEI inside Terminal-Information (14 or 15 ASCII digits) and the Software-Version
    with where they start, or None to decline."""
    imei = b""
    sv: bytes | None = None
    imei_at = sv_at = -1
    unpack = _AVP.unpack_from
    while pos < end:
        if end - pos < 12:
            return None
        code, fl = unpack(frame, pos)
        length = fl & 0xFFFFFF
        if not fl & 0x80000000 or length < 12 or pos + length > end:
            return None
        if _U32.unpack_from(frame, pos + 8)[0] != _VENDOR:
            return None
        data = frame[pos + 12 : pos + length]
        if code == _IMEI:
            if imei or len(data) not in (14, 15) or not (data.isdigit() and data.isascii()):
                return None
            imei, imei_at = data, pos + 12
        elif code == _SOFTWARE_VERSION:
            if sv is not None or not data.isascii():
                return None
            sv, sv_at = data, pos + 12
        else:
            return None
        pos += (length + 3) & ~3
    return (imei, sv, imei_at, sv_at) if imei else None


class Layout:
    """One accepted ECR's layout, to read the next ECRs laid out the same way without a scan.

    An MME sends the same ECR over and over with only the identifiers and four values
    changing: Session-Id, IMEI, Software-Version, User-Name. Everything else (every AVP
    header with its code, flags and length, Auth-Session-State, Origin-Host, Origin-Realm,
    Destination-Realm, padding) is kept here as static byte spans. A frame of the same
    length whose static spans are byte-identical has the same AVPs at the same places,
    so it needs only the checks ``scan_ecr`` applies to those four values; ``match``
    returns what ``scan_ecr`` would (tests/s13/test_fastpath.py checks this with hypothesis),
    or None when anything differs.
    """

    __slots__ = ("_sid_pad", "_static", "ecr", "spans")

    def __init__(self, frame: bytes, ecr: FastEcr) -> None:
        self.ecr = ecr
        self.spans = ecr.spans
        # The header is not compared: framing checked version and length (the length is part
        # of the key), the caller checked command code and application id, the flags are
        # checked as scan_ecr checks them, and the identifiers vary.
        variable = sorted([(0, 20), *zip(ecr.spans[::2], ecr.spans[1::2], strict=True)])
        static: list[tuple[int, int, bytes]] = []
        at = 0
        for a, b in variable:
            if a < 0:
                continue
            if a > at:
                static.append((at, a, frame[at:a]))
            at = b
        if at < len(frame):
            static.append((at, len(frame), frame[at:]))
        self._static = tuple(static)
        self._sid_pad = _PAD[(ecr.spans[1] - ecr.spans[0] + 8) & 3]

    def match(self, frame: bytes) -> FastEcr | None:
        """``scan_ecr(frame)`` for a frame of this layout, or None when it is not."""
        if frame[4] & _FLAGS_CHECKED != _FLAGS_WANTED:
            return None
        for a, b, expect in self._static:
            if frame[a:b] != expect:
                return None
        sid_a, sid_b, imei_a, imei_b, sv_a, sv_b, user_a, user_b = self.spans
        sid = frame[sid_a:sid_b]
        imei = frame[imei_a:imei_b]
        if not (sid.isascii() and imei.isdigit() and imei.isascii()):
            return None
        sv = None
        if sv_a >= 0:
            sv = frame[sv_a:sv_b]
            if not sv.isascii():
                return None
        imsi = None
        if user_a >= 0:
            user = frame[user_a:user_b]
            if not user.isascii():
                return None
            if 5 <= len(user) <= 15 and user.isdigit():
                imsi = user.decode()
        e = self.ecr
        return FastEcr(frame[sid_a - 8 : sid_b] + self._sid_pad, imei[:14].decode(), imsi, sid, imei, sv,
                       e.origin_host, e.origin_realm, self.spans)  # fmt: skip
