"""The operating modes in a running node (``modes:``): what the pure core
(:mod:`s13eir.decision.modes`) needs to know of a device, kept in the node's memory, and
what it asks to keep. One :class:`ModeState` serves S13 and N5g-eir alike, so both give
the same verdict by construction.

This is the embedded store: one node's pairs and grace records, in its memory, not kept
across a restart (a device then starts a new grace: the lenient way). Sharing them
between nodes through Redis is the next step (README: Operating modes).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable

from .config import ConfigError
from .decision.grace import Grace, GraceEvent, open_grace
from .decision.imsi_ranges import ImsiRangeError
from .decision.model import Verdict
from .decision.modes import ModesConfig, imsi_ranges, with_modes
from .decision.pairing import PairingError, Pairings
from .decision.sv_rules import SvRuleError, SvRules

MAX_GRACE_RECORDS = 10_000_000  # beyond, a new device is answered as in grace but not recorded (counted)


def modes_active(config: ModesConfig) -> bool:
    return config.mode != "permissive" or config.pairing.enabled or bool(config.imsi_ranges or config.sv_rules)


class ModeState:
    def __init__(self, config: ModesConfig, on_event: Callable[[GraceEvent], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        try:
            self.ranges = imsi_ranges(config)
        except ImsiRangeError as exc:
            raise ConfigError("modes.imsi_ranges", str(exc)) from None
        try:
            self.sv_rules = SvRules(config.sv_rules)
        except SvRuleError as exc:
            raise ConfigError("modes.sv_rules", str(exc)) from None
        self.msisdns = read_msisdn_map(config.msisdn_map) if config.msisdn_map else {}
        self.pairings = Pairings(config.pairing)
        self.graces: dict[tuple[str, str], Grace] = {}
        self.on_event = on_event
        self.clock = clock
        self.unrecorded = 0  # grace records refused past MAX_GRACE_RECORDS
        self.pair_refused = 0  # automatic pairs refused by the limits
        # Permissive with pairing (and no automatic pairing): only a paired IMEI or a
        # locked IMSI can change a verdict.
        self._permissive = config.mode == "permissive" and not config.pairing.auto_pair
        self._range_verdicts = any(r.policy != "bypass" for r in config.imsi_ranges)
        self._sv_rules_on = len(self.sv_rules) > 0

    def judge(self, verdict: Verdict, imei14: str, imsi: str | None, sv: bytes | str | None = None) -> Verdict:
        """The lists' verdict under the configured mode; keeps what the core asks to keep.
        ``sv``: the software version's two digits, when the request carried them (the S13
        fast path's bytes are decoded only when software-version rules exist)."""
        cfg = self.config
        if (self._permissive and not self.pairings.concerns(imei14, imsi) and not self._range_verdicts
                and not (self._sv_rules_on and self.sv_rules.has_tac(imei14[:8]))):  # fmt: skip
            return verdict  # no pair, no lock: the permissive answer as it was, at dict speed
        if isinstance(sv, bytes):
            sv = sv.decode("ascii", "replace") if self._sv_rules_on else None
        now = self.clock()
        pairing = self.pairings.check(imei14, imsi, now) if cfg.pairing.enabled else None
        key = (imei14, imsi or "")
        grace = self.graces.get(key)
        out, write = with_modes(verdict, imei14, imsi, now, cfg, pairing, grace, self.ranges, sv, self.sv_rules)
        if write.pair_origin is not None and imsi is not None:
            try:
                self.pairings.pair(imei14, imsi, write.pair_origin, now)
            except PairingError:
                self.pair_refused += 1
        if write.open_grace is not None:
            if len(self.graces) >= MAX_GRACE_RECORDS:
                self.unrecorded += 1
            else:
                record, event = open_grace(imei14, imsi or "", write.open_grace, now, cfg.grace)
                self.graces[key] = record
                self._emit(event)
        for event in write.events:
            self._emit(event)
        return out

    def _emit(self, event: GraceEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)


Check = Callable[[str, str | None, str | None], "Verdict | Awaitable[Verdict | None] | None"]


def moded_check(check: Check, modes: ModeState) -> Check:
    """N5g-eir's ``check`` with the lists' verdict judged under the modes, as S13's is."""

    def judged(imei14: str, imsi: str | None, sv: str | None) -> Verdict | Awaitable[Verdict | None] | None:
        result = check(imei14, imsi, sv)
        if result is None:
            return None
        if inspect.isawaitable(result):
            pending = result

            async def later() -> Verdict | None:
                verdict = await pending
                return modes.judge(verdict, imei14, imsi, sv) if verdict is not None else None

            return later()
        return modes.judge(result, imei14, imsi, sv)

    return judged


def grace_payload(event: GraceEvent, imsi: str, msisdn: str | None) -> bytes:
    """The grace event as published: what an SMS gateway or self-care portal needs."""
    return json.dumps({"kind": event.kind, "imei": event.imei14, "imsi": imsi, "msisdn": msisdn,
                       "reason": event.reason.value, "stage": event.stage.value, "deadline": event.deadline,
                       "t": event.t, "by": event.by, "note": event.note}).encode()  # fmt: skip


def read_msisdn_map(path: str) -> dict[str, str]:
    """``imsi,msisdn`` rows (a header first); a row that does not read stops the start
    with its file and line."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().strip().lower().replace(" ", "")
            if header != "imsi,msisdn":
                raise ConfigError("modes.msisdn_map", f"{path}:1: the header must be imsi,msisdn")
            for number, line in enumerate(f, start=2):
                row = line.strip()
                if not row:
                    continue
                imsi, sep, msisdn = row.partition(",")
                msisdn = msisdn.strip().removeprefix("+")
                imsi = imsi.strip()
                if not sep or not (5 <= len(imsi) <= 15 and imsi.isdigit()) or not (5 <= len(msisdn) <= 15
                                                                                   and msisdn.isdigit()):  # fmt: skip
                    raise ConfigError("modes.msisdn_map", f"{path}:{number}: not imsi,msisdn: {row[:60]!r}")
                out[imsi] = msisdn
    except OSError as exc:
        raise ConfigError("modes.msisdn_map", f"{path}: {exc.strerror or exc}") from None
    return out
