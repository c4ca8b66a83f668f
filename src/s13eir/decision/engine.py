"""The decision: turn what the stores know about an IMEI into one verdict.

Precedence, first match wins:

1. **Exception pair** (IMEI + IMSI), only when the request carried an IMSI and the
   pair is on the exceptions list: WHITELISTED. It overrides black and grey because
   national CEIRs issue exceptions precisely for the genuine subscriber of an IMEI
   that is blocked because it was cloned.
2. **Single IMEI** entries.
3. **IMEI range** entries.
4. **TAC** entries (a whole device model).
5. **Unknown-IMEI policy**: WHITELISTED, GREYLISTED or None (EQUIPMENT_UNKNOWN).

The more specific rule wins so an operator can whitelist one IMEI inside a
blacklisted TAC or range. Within one level, when several entries match (the same
IMEI on two lists or from two sources), the strictest wins: black > grey > white.
A phone on both the blacklist and a whitelist is therefore blocked: lists are fed
from several sources, and a stale or wrong whitelist row must never unblock a
stolen phone; the way to let a subscriber through is an exception pair.

Pure: no I/O, no clock, no logging. ``decide`` runs once per request, so the common
cases (nothing listed, one entry) avoid sorting and allocate only the verdict.
"""

from __future__ import annotations

from s13eir.decision.model import (
    Entry,
    EquipmentStatus,
    Facts,
    ListKind,
    Reason,
    Rule,
    UnknownPolicy,
    Verdict,
)

__all__ = ["EXCEPTIONS_LIST", "decide", "policy_verdict", "strictest"]

EXCEPTIONS_LIST = "exceptions"  # Reason.list for exception-pair verdicts

_SEVERITY = {ListKind.WHITE: 0, ListKind.GREY: 1, ListKind.BLACK: 2}
# Enum attribute access is a descriptor call; these run per listed phone, so look them up.
_STATUS = {kind: kind.status for kind in ListKind}
_NAME = {kind: kind.value for kind in ListKind}

# Policy verdicts are immutable and identical for every request: build them once.
_POLICY_VERDICTS: dict[UnknownPolicy, Verdict] = {
    policy: Verdict(
        status,
        Reason(rule=Rule.POLICY, list="", source="", entry=policy.value),
    )
    for policy, status in (
        (UnknownPolicy.WHITELISTED, EquipmentStatus.WHITELISTED),
        (UnknownPolicy.GREYLISTED, EquipmentStatus.GREYLISTED),
        (UnknownPolicy.UNKNOWN, None),
    )
}


def strictest(entries: tuple[Entry, ...]) -> Entry:
    """The strictest of several matching entries (black > grey > white).

    Ties go to the smallest (source, detail), not to the first: where an entry comes in
    the order depends on how a store keeps them, and every store (embedded, Redis) must
    give the same reason (tests/lists/test_store_equivalence.py found the two differing).
    """
    best = entries[0]
    rank = _SEVERITY[best.list]
    for entry in entries[1:]:
        r = _SEVERITY[entry.list]
        if r > rank or (r == rank and (entry.source, entry.detail) < (best.source, best.detail)):
            best, rank = entry, r
    return best


def policy_verdict(policy: UnknownPolicy) -> Verdict:
    """The verdict for an IMEI on no list."""
    return _POLICY_VERDICTS[policy]


def _listed(rule: Rule, entries: tuple[Entry, ...]) -> Verdict:
    entry = entries[0] if len(entries) == 1 else strictest(entries)
    kind = entry.list
    return Verdict(_STATUS[kind], Reason(rule, _NAME[kind], entry.source, entry.key, entry.detail))


def decide(facts: Facts, imsi: str | None, policy: UnknownPolicy, imei14: str) -> Verdict:
    """The verdict for ``imei14`` (and ``imsi``, if the request carried one).

    ``facts`` comes from a store; ``facts.exception`` is set only when the
    (IMEI, IMSI) pair is listed, so it is trusted as given.
    """
    exc = facts.exception
    if exc is not None and imsi is not None:
        return Verdict(
            EquipmentStatus.WHITELISTED,
            Reason(rule=Rule.EXCEPTION, list=EXCEPTIONS_LIST, source=exc.source, entry=f"{exc.imei}/{exc.imsi}"),
        )
    if facts.imei:
        return _listed(Rule.IMEI, facts.imei)
    if facts.range:
        return _listed(Rule.RANGE, facts.range)
    if facts.tac:
        return _listed(Rule.TAC, facts.tac)
    return _POLICY_VERDICTS[policy]
