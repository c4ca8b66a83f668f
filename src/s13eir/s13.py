"""TS 29.272 ME-Identity-Check on S13/S13': ECR in, ECA out. Pure.

The request has already passed the base screening (header bits, application,
command grammar, unknown M-bit AVPs), so this module deals only with what S13
means: the IMEI in Terminal-Information, the optional IMSI in User-Name, the
verdict, and the answer's shape (TS 29.272 §7.2.20).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .decision.engine import decide
from .decision.imei import normalize_imei
from .decision.model import REMOTE, EquipmentStatus, Facts, NeedRemote, Reason, Rule, UnknownPolicy, Verdict
from .diameter import avp as avpcodec
from .diameter.answers import answer, error_answer, proxy_info_avps, session_id_avp
from .diameter.avp import Avp, decode_avps
from .diameter.capx import LocalIdentity, PeerInfo
from .diameter.constants import (
    AUTH_SESSION_NO_STATE_MAINTAINED,
    AVP_AUTH_SESSION_STATE,
    AVP_EQUIPMENT_STATUS,
    AVP_EXPERIMENTAL_RESULT,
    AVP_EXPERIMENTAL_RESULT_CODE,
    AVP_IMEI,
    AVP_RESULT_CODE,
    AVP_SOFTWARE_VERSION,
    AVP_TERMINAL_INFORMATION,
    AVP_USER_NAME,
    AVP_VENDOR_ID,
    CMD_ME_IDENTITY_CHECK,
    ERROR_EQUIPMENT_UNKNOWN,
    FLAG_PROXIABLE,
    INVALID_AVP_VALUE,
    MISSING_AVP,
    SUCCESS,
    TOO_BUSY,
    UNABLE_TO_COMPLY,
    VENDOR_3GPP,
)
from .diameter.header import HEADER_LENGTH, Header, parse_header
from .s13_fastpath import scan_ecr

AUTH_SESSION_STATE_AVP = avpcodec.u32(AVP_AUTH_SESSION_STATE, AUTH_SESSION_NO_STATE_MAINTAINED)
_STATUS_AVPS = {s: avpcodec.u32(AVP_EQUIPMENT_STATUS, int(s), vendor=VENDOR_3GPP) for s in EquipmentStatus}
_SUCCESS_AVP = avpcodec.u32(AVP_RESULT_CODE, SUCCESS)
_UNKNOWN_AVP = avpcodec.grouped(
    AVP_EXPERIMENTAL_RESULT,
    [avpcodec.u32(AVP_VENDOR_ID, VENDOR_3GPP), avpcodec.u32(AVP_EXPERIMENTAL_RESULT_CODE, ERROR_EQUIPMENT_UNKNOWN)],
)
_U32 = struct.Struct("!I")
_ANSWER_HEAD = struct.Struct("!II")
_ECA_FLAGS_CODE = (FLAG_PROXIABLE << 24) | CMD_ME_IDENTITY_CHECK
_ECR_CODE = CMD_ME_IDENTITY_CHECK.to_bytes(3, "big")


class MalformedImeiPolicy(enum.Enum):
    REJECT = "reject"  # 5004 INVALID_AVP_VALUE with Failed-AVP
    BLACKLISTED = "blacklisted"
    GREYLISTED = "greylisted"
    WHITELISTED = "whitelisted"


class ImeisvInImeiPolicy(enum.Enum):
    REJECT = "reject"  # 16 digits in the IMEI AVP is malformed
    SPLIT = "split"  # read it as IMEI (14) + SVN (2), as some MMEs send it


class StoreUnavailablePolicy(enum.Enum):
    """How to answer when only the (unreachable) remote store could decide."""

    LAST_KNOWN = "last_known"  # the last answer confirmed for that IMEI here, else greylisted
    GREYLISTED = "greylisted"
    TOO_BUSY = "too_busy"  # 3004: the MME (or DRA) may try another EIR
    UNABLE_TO_COMPLY = "unable_to_comply"  # 5012: the MME applies its own policy


@dataclass(frozen=True, slots=True)
class S13Policy:
    unknown_imei: UnknownPolicy = UnknownPolicy.WHITELISTED
    malformed_imei: MalformedImeiPolicy = MalformedImeiPolicy.REJECT
    imeisv_in_imei: ImeisvInImeiPolicy = ImeisvInImeiPolicy.REJECT
    store_unavailable: StoreUnavailablePolicy = StoreUnavailablePolicy.LAST_KNOWN


class Lists(Protocol):
    def facts(self, imei14: str, imsi: str | None) -> Facts | NeedRemote: ...


@dataclass(frozen=True, slots=True)
class EcrQuery:
    """What an ECR asks, once read."""

    session_id: str
    imei: str  # as received
    imei14: str | None  # the lookup key, None when malformed
    software_version: str | None
    imsi: str | None  # User-Name when it is a plausible IMSI
    origin_host: str
    origin_realm: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """An ECR waiting for a remote lookup; ``MeIdentityCheck.complete`` answers it."""

    header: Header
    avps: list[Avp]
    query: EcrQuery
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered ECR, for logs, metrics and sighting events."""

    result_code: int  # 2001, 5422, or the error code
    verdict: Verdict | None
    query: EcrQuery | None
    detail: str = ""


def _digits(b: bytes) -> bool:
    return b.isdigit() and b.isascii()


def _find(avps: Sequence[Avp], code: int, vendor: int = 0) -> Avp | None:
    for a in avps:
        if a.code == code and a.vendor == vendor:
            return a
    return None


class MeIdentityCheck:
    """The S13 application: one instance per node, shared by every connection.

    ``lists`` is replaced as a whole on reload; a request reads it once.
    """

    def __init__(
        self,
        local: LocalIdentity,
        lists: Lists,
        policy: S13Policy,
        on_outcome: Callable[[Outcome, PeerInfo], None] | None = None,
        count_answer: Callable[[int, int], None] | None = None,
    ) -> None:
        self.local = local
        self.lists = lists
        self.policy = policy
        self.on_outcome = on_outcome
        self._count = count_answer
        self._tail = AUTH_SESSION_STATE_AVP + local.origin_avps
        self._white_body = _SUCCESS_AVP + self._tail + _STATUS_AVPS[EquipmentStatus.WHITELISTED]

    def fast_answer(self, frame: bytes, peer: PeerInfo) -> bytes | Deferred | None:
        """The common, well-formed ECR without the generic screening; None hands the
        request to the full path. A whitelisted phone is answered from a template with
        no objects and no logging; any other verdict (and a Bloom positive that Redis
        must confirm) is read into the same query the full path builds, so that it is
        logged and reported with its reason exactly as there."""
        if frame[5:8] != _ECR_CODE:
            return None
        ecr = scan_ecr(frame)
        if ecr is None:
            return None
        facts = self.lists.facts(ecr.imei14, ecr.imsi)
        if isinstance(facts, Facts):
            verdict = decide(facts, ecr.imsi, self.policy.unknown_imei, ecr.imei14)
            if verdict.status is EquipmentStatus.WHITELISTED:
                if self._count is not None:
                    self._count(SUCCESS, 0)
                body = ecr.session_id_avp + self._white_body
                return _ANSWER_HEAD.pack(0x01000000 | (20 + len(body)), _ECA_FLAGS_CODE) + frame[8:20] + body
        header = parse_header(frame)
        avps = decode_avps(frame, HEADER_LENGTH)
        query = self.read_query(header, avps)
        assert isinstance(query, EcrQuery)  # the scanner accepted it: Terminal-Information and IMEI are there
        if facts is REMOTE:
            return Deferred(header, avps, query, peer)
        return self._answer(header, avps, query, verdict, peer)

    def handle_request(self, header: Header, frame: bytes, avps: list[Avp], peer: PeerInfo) -> bytes | Deferred:
        query_or_error = self.read_query(header, avps)
        if isinstance(query_or_error, tuple):
            code, failed, detail = query_or_error
            if self.on_outcome is not None:
                self.on_outcome(Outcome(code, None, None, detail), peer)
            return error_answer(
                header,
                avps,
                self.local.origin_avps,
                code,
                failed_avp=failed,
                message=detail,
                extra=AUTH_SESSION_STATE_AVP,
            )
        query = query_or_error
        if query.imei14 is None:
            return self._malformed(header, avps, query, peer)
        facts = self.lists.facts(query.imei14, query.imsi)
        if facts is REMOTE:
            return Deferred(header, avps, query, peer)
        assert isinstance(facts, Facts)
        verdict = decide(facts, query.imsi, self.policy.unknown_imei, query.imei14)
        return self._answer(header, avps, query, verdict, peer)

    def complete(self, d: Deferred, facts: Facts | None, last_known: Facts | None = None) -> bytes:
        """Answer a deferred ECR with what the remote store said, or, when it could not
        be asked (``facts`` None), as ``policy.store_unavailable`` says."""
        q = d.query
        assert q.imei14 is not None
        if facts is not None:
            return self._answer(d.header, d.avps, q, decide(facts, q.imsi, self.policy.unknown_imei, q.imei14), d.peer)
        mode = self.policy.store_unavailable
        detail = "list store unavailable"
        if mode is StoreUnavailablePolicy.LAST_KNOWN and last_known is not None:
            verdict = decide(last_known, q.imsi, self.policy.unknown_imei, q.imei14)
            return self._answer(d.header, d.avps, q, verdict, d.peer, f"{detail}: last known state")
        if mode in (StoreUnavailablePolicy.LAST_KNOWN, StoreUnavailablePolicy.GREYLISTED):
            reason = Reason(Rule.POLICY, "", "policy.store_unavailable", mode.value, detail)
            return self._answer(d.header, d.avps, q, Verdict(EquipmentStatus.GREYLISTED, reason), d.peer, detail)
        code = TOO_BUSY if mode is StoreUnavailablePolicy.TOO_BUSY else UNABLE_TO_COMPLY
        if self.on_outcome is not None:
            self.on_outcome(Outcome(code, None, q, detail), d.peer)
        extra = AUTH_SESSION_STATE_AVP
        return error_answer(d.header, d.avps, self.local.origin_avps, code, message=detail, extra=extra)

    def _answer(
        self, header: Header, avps: Sequence[Avp], query: EcrQuery, verdict: Verdict, peer: PeerInfo, detail: str = ""
    ) -> bytes:
        out = self.build_eca(header, avps, verdict)
        if self.on_outcome is not None:
            code = SUCCESS if verdict.status is not None else ERROR_EQUIPMENT_UNKNOWN
            self.on_outcome(Outcome(code, verdict, query, detail), peer)
        return out

    def _malformed(self, header: Header, avps: list[Avp], query: EcrQuery, peer: PeerInfo) -> bytes:
        mal = self.policy.malformed_imei
        if mal is not MalformedImeiPolicy.REJECT:
            status = EquipmentStatus[mal.name]
            reason = Reason(Rule.MALFORMED, "", "policy.malformed_imei", query.imei, mal.value)
            return self._answer(header, avps, query, Verdict(status, reason), peer)
        ti = _find(avps, AVP_TERMINAL_INFORMATION, VENDOR_3GPP)
        imei_avp = _find(decode_avps(ti.data), AVP_IMEI, VENDOR_3GPP) if ti is not None else None
        failed = (
            avpcodec.encode(ti.code, avpcodec.pad(imei_avp.raw), vendor=ti.vendor, flags=ti.flags)
            if ti is not None and imei_avp is not None
            else None
        )
        detail = f"IMEI {query.imei!r} is not 14 or 15 digits"
        if self.on_outcome is not None:
            self.on_outcome(Outcome(INVALID_AVP_VALUE, None, query, detail), peer)
        return error_answer(header, avps, self.local.origin_avps, INVALID_AVP_VALUE, failed_avp=failed, message=detail,
                            extra=AUTH_SESSION_STATE_AVP)  # fmt: skip

    def read_query(self, header: Header, avps: Sequence[Avp]) -> EcrQuery | tuple[int, bytes | None, str]:
        """Read the ECR; an error is returned as (result code, Failed-AVP, text)."""
        ti = _find(avps, AVP_TERMINAL_INFORMATION, VENDOR_3GPP)
        if ti is None:  # the grammar check normally catches this first
            return (
                MISSING_AVP,
                avpcodec.grouped(AVP_TERMINAL_INFORMATION, [], vendor=VENDOR_3GPP),
                "no Terminal-Information",
            )
        inner = decode_avps(ti.data)
        imei_avp = _find(inner, AVP_IMEI, VENDOR_3GPP)
        if imei_avp is None:
            example = avpcodec.grouped(
                AVP_TERMINAL_INFORMATION, [avpcodec.utf8(AVP_IMEI, b"", vendor=VENDOR_3GPP)], vendor=VENDOR_3GPP
            )
            return MISSING_AVP, example, "no IMEI in Terminal-Information"
        raw = imei_avp.data
        sv_avp = _find(inner, AVP_SOFTWARE_VERSION, VENDOR_3GPP)
        sv = sv_avp.data.decode("utf-8", "replace") if sv_avp is not None else None
        imei = raw.decode("utf-8", "replace")
        imei14 = normalize_imei(imei)
        if (
            imei14 is None
            and len(raw) == 16
            and _digits(raw)
            and self.policy.imeisv_in_imei is ImeisvInImeiPolicy.SPLIT
        ):
            imei14 = imei[:14]
            sv = sv or imei[14:]
        user = _find(avps, AVP_USER_NAME)
        imsi = None
        if user is not None and 5 <= len(user.data) <= 15 and _digits(user.data):
            imsi = user.data.decode()
        sid = _find(avps, 263)
        host = _find(avps, 264)
        realm = _find(avps, 296)
        return EcrQuery(
            sid.data.decode("utf-8", "replace") if sid else "",
            imei,
            imei14,
            sv,
            imsi,
            host.data.decode("utf-8", "replace") if host else "",
            realm.data.decode("utf-8", "replace") if realm else "",
        )

    def build_eca(self, header: Header, avps: Sequence[Avp], verdict: Verdict) -> bytes:
        """ECA in python-diameter's AVP order: Session-Id, Result-Code or Experimental-Result,
        Auth-Session-State, Origin-Host, Origin-Realm, Equipment-Status, Proxy-Info."""
        if verdict.status is None:
            body = session_id_avp(avps) + _UNKNOWN_AVP + self._tail + proxy_info_avps(avps)
        else:
            body = (
                session_id_avp(avps) + _SUCCESS_AVP + self._tail + _STATUS_AVPS[verdict.status] + proxy_info_avps(avps)
            )
        return answer(header, body)
