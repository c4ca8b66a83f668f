"""Software-version rules per TAC (issue 17; Oracle's DSR EIR screens them): a model's
firmware with a known vulnerability is greylisted, say, until the phones are updated.
Pure.

A rule names a TAC (8 digits), a range of SVNs (the two digits of the software version,
TS 23.003 §6.2.2: ``from`` and ``to``, both included) and a verdict. A lookup is a
dictionary access and a scan of that TAC's few rules. Ranges of one TAC may not overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec


class SvRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    tac: str
    start: str = msgspec.field(default="00", name="from")
    end: str = msgspec.field(default="99", name="to")
    policy: Literal["whitelisted", "greylisted", "blacklisted"] = "greylisted"
    name: str = ""  # shown as the verdict's reason: "CVE-2026-1234 firmware"

    @property
    def label(self) -> str:
        return self.name or f"{self.tac} SVN {self.start}-{self.end}"


class SvRuleError(ValueError):
    pass


class SvRules:
    def __init__(self, rules: Iterable[SvRule]) -> None:
        self._by_tac: dict[str, list[SvRule]] = {}
        for r in rules:
            if not (len(r.tac) == 8 and r.tac.isascii() and r.tac.isdigit()):
                raise SvRuleError(f"{r.label}: the TAC must be 8 digits")
            for v in (r.start, r.end):
                if not (len(v) == 2 and v.isascii() and v.isdigit()):
                    raise SvRuleError(f"{r.label}: an SVN is 2 digits, not {v!r}")
            if r.start > r.end:
                raise SvRuleError(f"{r.label}: from {r.start} is after to {r.end}")
            for other in self._by_tac.get(r.tac, []):
                if r.start <= other.end and other.start <= r.end:
                    raise SvRuleError(f"{r.label} and {other.label} overlap")
            self._by_tac.setdefault(r.tac, []).append(r)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_tac.values())

    def has_tac(self, tac: str) -> bool:
        return tac in self._by_tac

    def find(self, imei14: str, sv: str | None) -> SvRule | None:
        """The rule for this phone's TAC and software version, if any."""
        if sv is None:
            return None
        rules = self._by_tac.get(imei14[:8])
        if rules is None:
            return None
        return next((r for r in rules if r.start <= sv <= r.end), None)
