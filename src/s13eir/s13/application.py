"""The S13 application (TS 29.272 ME-Identity-Check on S13/S13'): ECR in, ECA out. Pure.

One instance per node, shared by every connection: ``fast_answer`` takes the common ECR
(``fastpath``), ``handle_request`` any other; both read it (``ecr``), ask the lists for
facts and ``decision.policy`` for the verdict, and build the answer (``eca``). A Bloom
positive that the remote store must confirm is a ``Deferred``, resolved through the
``RemoteLists`` port (``resolve``, then ``complete``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

import msgspec

from ..decision.model import NO_FACTS, REMOTE, EquipmentStatus, Facts, NeedRemote, Verdict
from ..decision.policy import OUTAGE_DETAIL, Policy, Refusal
from ..detection.recorder import Recorder
from ..diameter import avp as avpcodec
from ..diameter.answers import error_answer
from ..diameter.avp import Avp, decode_avps
from ..diameter.capx import LocalIdentity, PeerInfo
from ..diameter.constants import (
    APP_S13,
    AVP_IMEI,
    AVP_TERMINAL_INFORMATION,
    CMD_ME_IDENTITY_CHECK,
    ERROR_EQUIPMENT_UNKNOWN,
    INVALID_AVP_VALUE,
    SUCCESS,
    TOO_BUSY,
    UNABLE_TO_COMPLY,
    VENDOR_3GPP,
)
from ..diameter.header import HEADER_LENGTH, Header, parse_header
from .eca import AUTH_SESSION_STATE_AVP, EcaBuilder
from .ecr import EcrQuery, find, query_of, read_query
from .fastpath import Layout, scan_ecr

__all__ = ["Deferred", "Lists", "MeIdentityCheck", "Outcome", "RemoteLists", "Unconfirmed"]

_ECR_CODE_APP = CMD_ME_IDENTITY_CHECK.to_bytes(3, "big") + APP_S13.to_bytes(4, "big")
_WHITELISTED = EquipmentStatus.WHITELISTED
_MAX_LAYOUT_KEYS = 4096
_LAYOUTS_PER_KEY = 4


class Lists(Protocol):
    def facts(self, imei14: str, imsi: str | None) -> Facts | NeedRemote: ...


class Unconfirmed(Protocol):
    """The remote store could not confirm a Bloom positive: what this node last knew of
    the IMEI and IMSI, and the lists whose filters hold it (``policy.store_unavailable``)."""

    @property
    def last_known(self) -> Facts | None: ...
    @property
    def positives(self) -> frozenset[str]: ...


class RemoteLists(Protocol):
    """The port to the store that confirms Bloom positives (``lists/redis_store.py``):
    ``done`` is called later, on the event loop, with the facts or an Unconfirmed."""

    def confirm(self, imei14: str, imsi: str | None, done: Callable[[Facts | Unconfirmed], None]) -> None: ...


class Deferred(msgspec.Struct, frozen=True, gc=False):
    """An ECR waiting for a remote lookup; ``MeIdentityCheck.complete`` answers it.

    ``session_id_avp`` is set when the fast path read the ECR: its answer is then built
    from a template, and ``header``/``avps`` are decoded from ``frame`` only if an error
    answer is needed."""

    frame: bytes
    query: EcrQuery
    peer: PeerInfo
    session_id_avp: bytes | None = None
    header: Header | None = None
    avps: list[Avp] | None = None

    def parts(self) -> tuple[Header, list[Avp]]:
        if self.header is not None and self.avps is not None:
            return self.header, self.avps
        return parse_header(self.frame), decode_avps(self.frame, HEADER_LENGTH)


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """One answered ECR, for logs, metrics and sighting events."""

    result_code: int  # 2001, 5422, or the error code
    verdict: Verdict | None
    query: EcrQuery | None
    detail: str = ""


class Modes(Protocol):
    """The operating modes (``s13eir.mode_state.ModeState``): the lists' verdict judged
    under the configured mode, the same for S13 and N5g-eir."""

    def judge(self, verdict: Verdict, imei14: str, imsi: str | None, sv: bytes | str | None = None) -> Verdict: ...


class MeIdentityCheck:
    """The S13 application: one instance per node, shared by every connection.

    ``lists`` is replaced as a whole on reload; a request reads it once.
    """

    def __init__(
        self,
        local: LocalIdentity,
        lists: Lists,
        policy: Policy,
        on_outcome: Callable[[Outcome, PeerInfo], None] | None = None,
        remote: RemoteLists | None = None,
    ) -> None:
        self.local = local
        self.lists = lists
        self.remote = remote  # where a Deferred is resolved (``resolve``)
        self.policy = policy
        self.on_outcome = on_outcome
        # Whitelisted answers of the fast path: counted here, read by the metrics at scrape
        # time (the other answers are reported through on_outcome).
        self.whitelisted_fast = 0
        # Detection's queue (s13eir.detection.recorder), when detection is on: every
        # answered ECR is left there, the fast path's whitelisted ones included.
        self.recorder: Recorder | None = None
        # The operating modes (modes:, mode_state.py), when any is on: the lists' verdict
        # judged under them, as N5g-eir's is.
        self.modes: Modes | None = None
        self.eca = EcaBuilder(local)
        # By (peer, frame length): a few, since ECRs of one length can differ in layout
        # (a 14-digit IMEI pads to the length of a 15-digit one). Keyed by id(): a reused
        # id can only cost a relearn, since a layout matches a frame by its bytes.
        self._layouts: dict[tuple[int, int], list[Layout]] = {}

    def fast_answer(self, frame: bytes, peer: PeerInfo) -> bytes | Deferred | None:
        """The common, well-formed ECR without the generic screening; None hands the
        request to the full path. Answers are built from templates (the scanner declines
        Proxy-Info, the only part of an ECA that is not). A whitelisted phone is answered
        with no objects and no logging; any other verdict is read into the same query the
        full path builds, so that it is logged and reported exactly as there; a Bloom
        positive that Redis must confirm is deferred."""
        if frame[5:12] != _ECR_CODE_APP:
            return None
        # The peer's layouts of this length first: a few byte compares instead of a scan.
        key = (id(peer), len(frame))
        layouts = self._layouts.get(key)
        ecr = None
        if layouts is not None:
            for layout in layouts:
                if (ecr := layout.match(frame)) is not None:
                    break
        if ecr is None:
            ecr = scan_ecr(frame)
            if ecr is None:
                return None
            if layouts is None:
                if len(self._layouts) >= _MAX_LAYOUT_KEYS:
                    self._layouts.clear()  # peers come and go; a layout is relearnt in one ECR
                self._layouts[key] = [Layout(frame, ecr)]
            else:
                layouts.insert(0, Layout(frame, ecr))
                del layouts[_LAYOUTS_PER_KEY:]
        facts = self.lists.facts(ecr.imei14, ecr.imsi)
        if facts is NO_FACTS:  # on no list: what decide() would say, without the walk
            verdict = self.policy.unlisted()
        elif facts is REMOTE:
            return Deferred(frame, query_of(ecr), peer, ecr.session_id_avp)
        else:
            verdict = self.policy.verdict(cast(Facts, facts), ecr.imsi, ecr.imei14)
        if self.modes is not None:
            verdict = self.modes.judge(verdict, ecr.imei14, ecr.imsi, ecr.software_version)
        if verdict.status is _WHITELISTED:
            self.whitelisted_fast += 1
            if self.recorder is not None:
                self.recorder.record(ecr.imei14, ecr.imsi, ecr.software_version, ecr.imei, ecr.origin_host, "s13")
            return self.eca.from_template(frame, ecr.session_id_avp, verdict)
        return self._fast_answer(frame, ecr.session_id_avp, query_of(ecr), verdict, peer)

    def _fast_answer(
        self, frame: bytes, session_id_avp: bytes, query: EcrQuery, verdict: Verdict, peer: PeerInfo, detail: str = ""
    ) -> bytes:
        out = self.eca.from_template(frame, session_id_avp, verdict)
        self._report(verdict, query, peer, detail)
        return out

    def handle_request(self, header: Header, frame: bytes, avps: list[Avp], peer: PeerInfo) -> bytes | Deferred:
        query_or_error = read_query(avps, self.policy)
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
            return Deferred(frame, query, peer, header=header, avps=avps)
        assert isinstance(facts, Facts)
        verdict = self.policy.verdict(facts, query.imsi, query.imei14)
        if self.modes is not None:
            verdict = self.modes.judge(verdict, query.imei14, query.imsi, query.software_version)
        return self._answer(header, avps, query, verdict, peer)

    def resolve(self, token: object, deliver: Callable[[bytes], None]) -> None:
        """Have the remote store confirm a deferred ECR's Bloom positive; ``deliver`` gets
        the answer (the transport writes it), whatever the store says or fails to."""
        assert isinstance(token, Deferred) and self.remote is not None and token.query.imei14 is not None

        def done(result: Facts | Unconfirmed) -> None:
            if isinstance(result, Facts):
                deliver(self.complete(token, result))
            else:
                deliver(self.complete(token, None, result.last_known, result.positives))

        self.remote.confirm(token.query.imei14, token.query.imsi, done)

    def complete(
        self,
        d: Deferred,
        facts: Facts | None,
        last_known: Facts | None = None,
        positives: frozenset[str] = frozenset(),
    ) -> bytes:
        """Answer a deferred ECR with what the remote store said, or, when it could not
        be asked (``facts`` None), as ``policy.store_unavailable`` says
        (``decision.policy``; ``positives``: the lists whose Bloom filters hold the IMEI)."""
        q = d.query
        assert q.imei14 is not None
        if facts is not None:
            verdict = self.policy.verdict(facts, q.imsi, q.imei14)
            if self.modes is not None:
                verdict = self.modes.judge(verdict, q.imei14, q.imsi, q.software_version)
            return self._verdict_answer(d, verdict)
        outcome = self.policy.unconfirmed(last_known, positives, q.imsi, q.imei14)
        if not isinstance(outcome, Refusal):
            return self._verdict_answer(d, *outcome)
        detail = OUTAGE_DETAIL
        code = TOO_BUSY if outcome is Refusal.TOO_BUSY else UNABLE_TO_COMPLY
        if self.on_outcome is not None:
            self.on_outcome(Outcome(code, None, q, detail), d.peer)
        header, avps = d.parts()
        return error_answer(header, avps, self.local.origin_avps, code, message=detail, extra=AUTH_SESSION_STATE_AVP)

    def _verdict_answer(self, d: Deferred, verdict: Verdict, detail: str = "") -> bytes:
        if d.session_id_avp is not None:
            return self._fast_answer(d.frame, d.session_id_avp, d.query, verdict, d.peer, detail)
        header, avps = d.parts()
        return self._answer(header, avps, d.query, verdict, d.peer, detail)

    def _answer(
        self, header: Header, avps: Sequence[Avp], query: EcrQuery, verdict: Verdict, peer: PeerInfo, detail: str = ""
    ) -> bytes:
        out = self.eca.build(header, avps, verdict)
        self._report(verdict, query, peer, detail)
        return out

    def _report(self, verdict: Verdict, query: EcrQuery, peer: PeerInfo, detail: str) -> None:
        if self.recorder is not None and query.imei14 is not None:
            self.recorder.record(query.imei14, query.imsi, query.software_version, query.imei, query.origin_host, "s13")
        if self.on_outcome is not None:
            code = SUCCESS if verdict.status is not None else ERROR_EQUIPMENT_UNKNOWN
            self.on_outcome(Outcome(code, verdict, query, detail), peer)

    def _malformed(self, header: Header, avps: list[Avp], query: EcrQuery, peer: PeerInfo) -> bytes:
        verdict = self.policy.malformed(query.imei)
        if isinstance(verdict, Verdict):
            return self._answer(header, avps, query, verdict, peer)
        ti = find(avps, AVP_TERMINAL_INFORMATION, VENDOR_3GPP)
        imei_avp = find(decode_avps(ti.data), AVP_IMEI, VENDOR_3GPP) if ti is not None else None
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
