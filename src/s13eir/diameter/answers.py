"""Building answers: the generic answer-message of RFC 6733 §7.2 and the
header rules of §6.2 (R clear, P copied, identifiers echoed, E-bit on 3xxx)."""

from __future__ import annotations

from collections.abc import Sequence

from . import avp as avpcodec
from .avp import Avp, AvpLengthError, decode_avps
from .constants import (
    AVP_ERROR_MESSAGE,
    AVP_FAILED_AVP,
    AVP_FLAG_VENDOR,
    AVP_PROXY_HOST,
    AVP_PROXY_INFO,
    AVP_PROXY_STATE,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    TOO_BUSY,
    is_protocol_error,
)
from .header import HEADER_LENGTH, Header, pack_header, parse_header


def answer(request: Header, body: bytes, *, error: bool = False) -> bytes:
    """Wrap an answer body in a header that mirrors ``request``."""
    flags = (request.flags & FLAG_PROXIABLE) | (FLAG_ERROR if error else 0)
    return (
        pack_header(
            HEADER_LENGTH + len(body),
            flags,
            request.command_code,
            request.application_id,
            request.hop_by_hop,
            request.end_to_end,
        )
        + body
    )


def session_id_avp(avps: Sequence[Avp]) -> bytes:
    """The request's Session-Id to echo; left out when it is not valid UTF-8, since an
    answer carrying it could not be decoded (the error answer then names it in Failed-AVP)."""
    for a in avps:
        if a.code == AVP_SESSION_ID and a.vendor == 0:
            try:
                a.data.decode("utf-8")
            except UnicodeDecodeError:
                return b""
            return avpcodec.pad(a.raw)
    return b""


def proxy_info_avps(avps: Sequence[Avp]) -> bytes:
    """Every well-formed Proxy-Info of the request, in order and byte for byte (RFC 6733
    §6.2). A malformed one is not copied: it would make the answer malformed too. One
    whose last inner AVP lacks its padding is copied with the padding added (a strict
    decoder, python-diameter's, cannot read it otherwise)."""
    out = []
    for a in avps:
        if a.code == AVP_PROXY_INFO and a.vendor == 0:
            echo = _proxy_info_echo(a)
            if echo is not None:
                out.append(echo)
    return b"".join(out)


def _proxy_info_echo(a: Avp) -> bytes | None:
    # Proxy-Info ::= < AVP Header: 284 > { Proxy-Host } { Proxy-State } * [ AVP ]: a relay
    # needs exactly one of each to route the answer back; the rest is its own, echoed as is.
    try:
        children = decode_avps(a.data)
    except AvpLengthError:
        return None
    hosts = [c for c in children if c.code == AVP_PROXY_HOST and c.vendor == 0]
    states = [c for c in children if c.code == AVP_PROXY_STATE and c.vendor == 0]
    if len(hosts) != 1 or len(states) != 1 or not hosts[0].data:
        return None
    try:
        hosts[0].data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    padded = b"".join(avpcodec.pad(c.raw) for c in children)
    if padded == a.data:
        return avpcodec.pad(a.raw)
    return avpcodec.encode(a.code, padded, flags=a.flags)


def error_answer(
    request: Header,
    request_avps: Sequence[Avp],
    origin: bytes,
    result_code: int,
    *,
    failed_avp: bytes | None = None,
    message: str = "",
    extra: bytes = b"",
) -> bytes:
    """An answer carrying ``result_code``: E-bit exactly on 3xxx, Failed-AVP when given.

    ``origin`` is our encoded Origin-Host + Origin-Realm; ``extra`` holds AVPs the
    application's answer format requires (S13: Auth-Session-State). A 3xxx answer is
    the generic answer-message of RFC 6733 §7.2 instead, which names no such AVP:
    strict stacks (Erlang/OTP diameter) reject an M-bit AVP it does not list, so
    ``extra`` is left out there.
    """
    protocol_error = is_protocol_error(result_code)
    parts = [
        session_id_avp(request_avps),
        avpcodec.u32(AVP_RESULT_CODE, result_code),
        b"" if protocol_error else extra,
        origin,
    ]
    if message:
        parts.append(avpcodec.utf8(AVP_ERROR_MESSAGE, message[:200], mandatory=False))
    if failed_avp is not None:
        parts.append(avpcodec.encode(AVP_FAILED_AVP, failed_avp))
    parts.append(proxy_info_avps(request_avps))
    return answer(request, b"".join(parts), error=protocol_error)


_TAILS: dict[tuple[bytes, str], bytes] = {}
_PROXY_INFO_CODE = b"\0\0\1\x1c"  # 284
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length % 4
# The first 5 header bytes of an answer: version, length, flags (P kept, E set).
_BUSY_FLAGS = [bytes(((f & FLAG_PROXIABLE) | FLAG_ERROR,)) for f in range(256)]


def busy_answer(frame: bytes, origin: bytes, message: str) -> bytes:
    """``error_answer`` with 3004 DIAMETER_TOO_BUSY for the request ``frame``, byte for
    byte, built from a template when the request is laid out as MMEs send it (Session-Id
    first, ASCII, no Proxy-Info): refusing must cost far less than answering, or shedding
    load under overload would add to it (about 1 us here, against 4 for a walk of the
    request's AVPs). The request is not otherwise parsed: a node too busy to answer it
    says so before reading it, as RFC 6733 §7.1.3 has it."""
    end = len(frame)
    if end >= 28 and frame[20:24] == b"\0\0\1\x07" and not frame[24] & AVP_FLAG_VENDOR:  # Session-Id, 263
        sid_end = 20 + int.from_bytes(frame[25:28], "big")
        # No Proxy-Info to echo: its code appears nowhere (else the walk below decides).
        if (
            28 <= sid_end <= end
            and frame[28:sid_end].isascii()
            and (_PROXY_INFO_CODE not in frame or not _has_proxy_info(frame, sid_end))
        ):
            tail = _TAILS.get((origin, message))
            if tail is None:
                text = avpcodec.utf8(AVP_ERROR_MESSAGE, message[:200], mandatory=False)
                tail = avpcodec.u32(AVP_RESULT_CODE, TOO_BUSY) + origin + text
                _TAILS[(origin, message)] = tail
            pad = _PADDING[sid_end & 3]
            length = sid_end + len(pad) + len(tail)
            return b"".join((b"\x01", length.to_bytes(3, "big"), _BUSY_FLAGS[frame[4]], frame[5:sid_end], pad, tail))
    return error_answer(parse_header(frame), lenient_avps(frame), origin, TOO_BUSY, message=message)


def _has_proxy_info(frame: bytes, pos: int) -> bool:
    """Whether a top-level AVP from ``pos`` on is a Proxy-Info (or the walk cannot tell)."""
    pos = (pos + 3) & ~3
    end = len(frame)
    while pos + 8 <= end:
        if frame[pos : pos + 4] == _PROXY_INFO_CODE and not frame[pos + 4] & AVP_FLAG_VENDOR:
            return True
        length = int.from_bytes(frame[pos + 5 : pos + 8], "big")
        if length < 8:
            return True
        pos += (length + 3) & ~3
    return pos != end


def lenient_avps(frame: bytes) -> list[Avp]:
    """The AVPs of a request that failed screening, as far as they can be read,
    so that the error answer can still echo Session-Id and Proxy-Info."""
    try:
        return decode_avps(frame, HEADER_LENGTH)
    except AvpLengthError as exc:
        return exc.partial
