"""What a node answers for a Bloom positive that the list store cannot confirm.

Only Bloom positives need the store: a phone on none of this node's filters is
answered as ever, from the lists as the node last read them. For a positive, the
node knows which lists' filters hold the IMEI (a filter can be wrong only one way:
a false positive, about ``store.bloom_fp_rate`` of unlisted phones) and, if the
phone was confirmed before, the last answer it had for that IMEI and IMSI.

``policy.store_unavailable`` (README: Outages, which phones pass under each one):

``last_known`` (default)
    The last confirmed answer, else GREYLISTED. A legitimate phone never loses
    service to an outage (a greylisted phone attaches and is sighted); the phones
    let in that should not be are listed phones this node had not confirmed since
    its cache was last filled, and they are GREYLISTED, never WHITELISTED.
``greylisted``
    GREYLISTED, whatever was known.
``bloom``
    The last confirmed answer, else what the filters say: a blacklist positive is
    BLACKLISTED (so is the odd false positive: about one unlisted phone in
    1/``bloom_fp_rate`` that had not been confirmed before), any other GREYLISTED.
``too_busy`` / ``unable_to_comply``
    No verdict: 3004 (the MME may try another EIR) / 5012 (the MME applies its own
    policy); over N5g-eir, 500.

In every mode a black or grey Bloom positive is never answered WHITELISTED during an
outage, not even when it was last confirmed so (a false positive, or an exception
pair): the change that listed it may be the one the node cannot see. It is
GREYLISTED instead, which lets the phone attach.
"""

from __future__ import annotations

import enum

from .engine import decide
from .model import EquipmentStatus, Facts, Reason, Rule, UnknownPolicy, Verdict

__all__ = ["OUTAGE_DETAIL", "StoreUnavailablePolicy", "outage_verdict"]

OUTAGE_DETAIL = "list store unavailable"
_GUARDED = frozenset({"black", "grey"})


class StoreUnavailablePolicy(enum.Enum):
    """How to answer when only the (unreachable) remote store could decide."""

    LAST_KNOWN = "last_known"  # the last answer confirmed for that IMEI here, else greylisted
    GREYLISTED = "greylisted"
    BLOOM = "bloom"  # the last confirmed answer, else the filters: black positive -> blacklisted
    TOO_BUSY = "too_busy"  # 3004: the MME (or DRA) may try another EIR
    UNABLE_TO_COMPLY = "unable_to_comply"  # 5012: the MME applies its own policy


def _policy(mode: StoreUnavailablePolicy, status: EquipmentStatus, detail: str) -> Verdict:
    return Verdict(status, Reason(Rule.POLICY, "", "policy.store_unavailable", mode.value, detail))


def outage_verdict(
    mode: StoreUnavailablePolicy,
    last_known: Facts | None,
    positives: frozenset[str],
    imsi: str | None,
    unknown: UnknownPolicy,
    imei14: str,
) -> tuple[Verdict, str] | None:
    """(verdict, detail for the log) for a Bloom positive the store could not confirm;
    None for the modes that answer with an error instead."""
    if mode in (StoreUnavailablePolicy.TOO_BUSY, StoreUnavailablePolicy.UNABLE_TO_COMPLY):
        return None
    if mode is not StoreUnavailablePolicy.GREYLISTED and last_known is not None:
        verdict = decide(last_known, imsi, unknown, imei14)
        if verdict.status is EquipmentStatus.WHITELISTED and positives & _GUARDED:
            lists = "/".join(sorted(positives & _GUARDED))
            detail = f"{OUTAGE_DETAIL}: last known WHITELISTED, but a {lists} Bloom positive"
            return _policy(mode, EquipmentStatus.GREYLISTED, detail), detail
        return verdict, f"{OUTAGE_DETAIL}: last known state"
    if mode is StoreUnavailablePolicy.BLOOM and "black" in positives:
        detail = f"{OUTAGE_DETAIL}: blacklist Bloom positive"
        return _policy(mode, EquipmentStatus.BLACKLISTED, detail), detail
    return _policy(mode, EquipmentStatus.GREYLISTED, OUTAGE_DETAIL), OUTAGE_DETAIL
