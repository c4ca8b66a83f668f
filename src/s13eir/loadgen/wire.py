"""Bytes on the wire for the simulated MMEs: ECR templates and a struct scanner for
answers (the base messages are ``diameter.initiator``'s). Pure (no I/O, no clock).

An ECR is written as five pieces joined per batch: a 20-byte header packed per request
(it carries the ids and the length), the MME's identity block split around the
Session-Id counter, the counter itself (fixed width, so no length ever changes), and
the body pre-encoded once per (IMEI, IMSI, SV) combination and shared by every MME.
Answers are read by walking the top-level AVP headers only; no message objects are
built per answer. An EIR's answers differ in little but the Session-Id, so
``AnswerReader`` remembers what the bytes after it said and walks only answers it has
not seen: reading answers was the generator's largest cost per request, and an open
loop that keeps its own core busy adds its own queueing to every latency it measures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from s13eir.diameter import avp as enc
from s13eir.diameter.constants import (
    APP_S13,
    AUTH_SESSION_NO_STATE_MAINTAINED,
    AVP_AUTH_SESSION_STATE,
    AVP_DESTINATION_REALM,
    AVP_EQUIPMENT_STATUS,
    AVP_EXPERIMENTAL_RESULT,
    AVP_EXPERIMENTAL_RESULT_CODE,
    AVP_IMEI,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
    AVP_SOFTWARE_VERSION,
    AVP_TERMINAL_INFORMATION,
    AVP_USER_NAME,
    CMD_ME_IDENTITY_CHECK,
    ERROR_EQUIPMENT_UNKNOWN,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    SUCCESS,
    VENDOR_3GPP,
)

from .doic import SUPPORTED_FEATURES, Report, scan_olr

__all__ = [
    "BLACKLISTED",
    "EQUIPMENT_UNKNOWN",
    "GREYLISTED",
    "NO_OUTCOME",
    "SESSION_COUNTER_DIGITS",
    "WHITELISTED",
    "AnswerReader",
    "EcrEncoder",
    "ecr_body",
    "outcome",
    "outcome_name",
    "parse_outcome",
    "scan_answer",
]

_HEADER = struct.Struct("!IIIII")
_AVP = struct.Struct("!II")
_U32 = struct.Struct("!I")
_MASK32 = 0xFFFFFFFF
_ECR_FLAGS_CODE = ((FLAG_REQUEST | FLAG_PROXIABLE) << 24) | CMD_ME_IDENTITY_CHECK
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

SESSION_COUNTER_DIGITS = 10  # Session-Id "<origin-host>;<epoch>;<counter>" with a fixed-width counter
_COUNTER_MOD = 10**SESSION_COUNTER_DIGITS

# Outcomes: what one answer said, as one int so that comparing it with the expected
# verdict is a single comparison. 0-2 are Equipment-Status values (with 2001); anything
# else is the Result-Code or Experimental-Result-Code (5422, 5004, 3xxx...).
WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2
EQUIPMENT_UNKNOWN = ERROR_EQUIPMENT_UNKNOWN
NO_OUTCOME = -1  # neither a result code nor an Equipment-Status: unparsable
_NAMES = {WHITELISTED: "WHITELISTED", BLACKLISTED: "BLACKLISTED", GREYLISTED: "GREYLISTED"}
_BY_NAME = {
    "WHITELISTED": WHITELISTED,
    "BLACKLISTED": BLACKLISTED,
    "GREYLISTED": GREYLISTED,
    "UNKNOWN": EQUIPMENT_UNKNOWN,
    "EQUIPMENT_UNKNOWN": EQUIPMENT_UNKNOWN,
}


def outcome(result_code: int, experimental_code: int, status: int) -> int:
    """The outcome of an answer scanned by :func:`scan_answer` (-1 for absent values)."""
    if result_code == SUCCESS and 0 <= status < 1000:
        return status
    if experimental_code >= 0:
        return experimental_code
    return result_code  # 2001 without Equipment-Status stays 2001: never an expected verdict


def outcome_name(code: int) -> str:
    if code == EQUIPMENT_UNKNOWN:
        return "EQUIPMENT_UNKNOWN"
    return _NAMES.get(code, str(code))


def parse_outcome(text: str) -> int:
    """WHITELISTED, BLACKLISTED, GREYLISTED, UNKNOWN / EQUIPMENT_UNKNOWN or a result code."""
    word = text.strip().upper()
    if word in _BY_NAME:
        return _BY_NAME[word]
    if word.isascii() and word.isdigit() and 1000 <= int(word) <= 9999:
        return int(word)
    raise ValueError(f"{text.strip()!r} is not WHITELISTED, BLACKLISTED, GREYLISTED, UNKNOWN or a result code")


# -- requests ---------------------------------------------------------------------------


def ecr_body(imei: str, imsi: str | None, sv: str | None) -> bytes:
    """The per-combination part of an ECR: Terminal-Information {IMEI, Software-Version},
    then User-Name (TS 29.272 §7.2.19 order)."""
    inner = [enc.utf8(AVP_IMEI, imei, vendor=VENDOR_3GPP)]
    if sv is not None:
        inner.append(enc.utf8(AVP_SOFTWARE_VERSION, sv, vendor=VENDOR_3GPP))
    body = enc.grouped(AVP_TERMINAL_INFORMATION, inner, vendor=VENDOR_3GPP)
    if imsi is not None:
        body += enc.utf8(AVP_USER_NAME, imsi)
    return body


class EcrEncoder:
    """One MME's ECRs: unique hop-by-hop and end-to-end ids and Session-Ids."""

    __slots__ = ("_e2e0", "_fixed", "_hbh0", "_head", "_tail", "count")

    def __init__(
        self,
        origin_host: str,
        origin_realm: str,
        destination_realm: str,
        epoch: int,
        hbh0: int,
        e2e0: int,
        doic: bool = False,
    ) -> None:
        prefix = f"{origin_host};{epoch};".encode()
        sid_len = 8 + len(prefix) + SESSION_COUNTER_DIGITS
        # Session-Id first (fixed position in the ECR grammar); its value ends with the counter.
        self._head = _AVP.pack(AVP_SESSION_ID, (0x40 << 24) | sid_len) + prefix
        self._tail = (
            _PAD[sid_len & 3]
            + enc.u32(AVP_AUTH_SESSION_STATE, AUTH_SESSION_NO_STATE_MAINTAINED)
            + enc.utf8(AVP_ORIGIN_HOST, origin_host)
            + enc.utf8(AVP_ORIGIN_REALM, origin_realm)
            + enc.utf8(AVP_DESTINATION_REALM, destination_realm)
            + (SUPPORTED_FEATURES if doic else b"")  # RFC 7683: in every request of a DOIC node
        )
        self._fixed = 0x01000000 | (20 + len(self._head) + SESSION_COUNTER_DIGITS + len(self._tail))
        self._hbh0 = hbh0
        self._e2e0 = e2e0
        self.count = 0

    def encode(self, body: bytes, out: list[bytes]) -> int:
        """Append one ECR with ``body`` to ``out`` (to be joined); returns its hop-by-hop id."""
        n = self.count = self.count + 1
        hbh = (self._hbh0 + n) & _MASK32
        out += (
            _HEADER.pack(self._fixed + len(body), _ECR_FLAGS_CODE, APP_S13, hbh, (self._e2e0 + n) & _MASK32),
            self._head,
            b"%010d" % (n % _COUNTER_MOD),
            self._tail,
            body,
        )
        return hbh


# -- answers ----------------------------------------------------------------------------


def scan_answer(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int, int] | None:
    """(Result-Code, Experimental-Result-Code, Equipment-Status) of the message in
    ``buf[pos:end]``, -1 for each one absent; None when an AVP length does not fit."""
    return _scan_avps(buf, pos + 20, end)


def _scan_avps(buf: bytes | bytearray, p: int, end: int) -> tuple[int, int, int] | None:
    result = exp = status = -1
    unpack = _AVP.unpack_from
    while p < end:
        if end - p < 8:
            return None
        code, fl = unpack(buf, p)
        length = fl & 0xFFFFFF
        if length < 8 or p + length > end:
            return None
        if code == AVP_RESULT_CODE and not fl & 0x80000000:
            if length != 12:
                return None
            result = _U32.unpack_from(buf, p + 8)[0]
        elif code == AVP_EQUIPMENT_STATUS and fl & 0x80000000:
            if length != 16:
                return None
            if _U32.unpack_from(buf, p + 8)[0] == VENDOR_3GPP:
                status = _U32.unpack_from(buf, p + 12)[0]
        elif code == AVP_EXPERIMENTAL_RESULT and not fl & 0x80000000:
            inner = _experimental_code(buf, p + 8, p + length)
            if inner is None:
                return None
            exp = inner
        p += (length + 3) & ~3
    return result, exp, status


Summary = tuple[int, int, int]  # (Result-Code, or else Experimental-Result-Code; Equipment-Status; outcome)


class AnswerReader:
    """What an answer says, as (code, Equipment-Status, outcome): ``scan_answer`` and
    ``outcome`` in one, for the answers of one EIR.

    The Session-Id comes first in an ECA and is the one AVP that changes from answer to
    answer; what follows it (Origin-Host, Origin-Realm, Result-Code, Equipment-Status...)
    is one of a handful of byte strings, one per verdict. The summary is remembered by
    those bytes: scanning them gives the same result as scanning the whole answer, since
    the scan only skips a well-formed Session-Id (tests check this with hypothesis). An
    answer that does not start with one is scanned; so is every answer once ``limit``
    different tails have been seen (an EIR whose answers carry a varying AVP).
    """

    __slots__ = ("_known", "_limit", "_olrs")

    def __init__(self, limit: int = 256) -> None:
        self._known: dict[bytes, Summary | None] = {}
        self._olrs: dict[bytes, Report | None] = {}
        self._limit = limit

    def olr(self, buf: bytes | bytearray, pos: int, end: int) -> Report | None:
        """The answer's DOIC overload report (OC-OLR), remembered by the same tail."""
        found: Report | None = self._remembered(buf, pos, end, self._olrs, scan_olr)
        return found

    def read(self, buf: bytes | bytearray, pos: int, end: int) -> Summary | None:
        """The summary of the answer in ``buf[pos:end]``; None when it is unparsable."""
        found: Summary | None = self._remembered(buf, pos, end, self._known, _scan_summary)
        return found

    def _remembered(self, buf: bytes | bytearray, pos: int, end: int, known: dict[bytes, Any],
                    scan: Callable[[bytes | bytearray, int, int], Any]) -> Any:  # fmt: skip
        """``scan`` of the AVPs after a well-formed leading Session-Id, remembered in
        ``known`` by those bytes; the whole answer scanned when it does not start so."""
        p = pos + 20
        if end - p >= 8:
            code, fl = _AVP.unpack_from(buf, p)
            length = fl & 0xFFFFFF
            if code == AVP_SESSION_ID and not fl & 0x80000000 and length >= 8 and p + length <= end:
                tail = bytes(buf[p + ((length + 3) & ~3) : end])
                if tail in known:
                    return known[tail]
                found = scan(tail, 0, len(tail))
                if len(known) < self._limit:
                    known[tail] = found
                return found
        return scan(buf, p, end)


def _scan_summary(buf: bytes | bytearray, p: int, end: int) -> Summary | None:
    return _summarize(_scan_avps(buf, p, end))


def _summarize(scanned: tuple[int, int, int] | None) -> Summary | None:
    if scanned is None:
        return None
    result, exp, status = scanned
    return (result if result >= 0 else exp), status, outcome(result, exp, status)


def _experimental_code(buf: bytes | bytearray, p: int, end: int) -> int | None:
    """Experimental-Result-Code inside Experimental-Result (-1 if missing)."""
    code_value = -1
    while p < end:
        if end - p < 8:
            return None
        code, fl = _AVP.unpack_from(buf, p)
        length = fl & 0xFFFFFF
        head = 12 if fl & 0x80000000 else 8
        if length < head or p + length > end:
            return None
        if code == AVP_EXPERIMENTAL_RESULT_CODE and head == 8:
            if length != 12:
                return None
            code_value = _U32.unpack_from(buf, p + 8)[0]
        p += (length + 3) & ~3
    return code_value
