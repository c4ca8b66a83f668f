"""Operator policy: every choice the operator makes about an answer that the lists do
not decide, in one pure module. S13 (``s13``) and N5g-eir (``sbi.n5g_eir``) both ask
:class:`Policy` and only map what it says to their wire (a :class:`Verdict`, or a
:class:`Refusal`: 5004/3004/5012 on S13, 400/500 on N5g-eir), so the two interfaces give
the same verdict by construction; ``tests/sbi/test_equivalence.py`` checks it over
generated phones, lists and policies. ``config.PolicyConfig`` holds the same enums, so
the YAML section is read straight into them.

- ``unknown_imei``: an IMEI on no list (WHITELISTED, GREYLISTED, or EQUIPMENT_UNKNOWN
  in restrictive mode).
- ``malformed_imei``: an IMEI that is not 14 or 15 digits: rejected (5004 with
  Failed-AVP; 400), or answered with a status.
- ``imeisv_in_imei``: 16 digits in the IMEI AVP, as some MMEs send an IMEISV there:
  malformed, or read as IMEI (14) + SVN (2).
- ``store_unavailable``: a Bloom positive the list store cannot confirm (below).

Store unavailable. Only Bloom positives need the store: a phone on none of this node's filters is
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
from dataclasses import dataclass

from .engine import decide, policy_verdict
from .model import EquipmentStatus, Facts, Reason, Rule, UnknownPolicy, Verdict

__all__ = [
    "OUTAGE_DETAIL",
    "ImeisvInImeiPolicy",
    "MalformedImeiPolicy",
    "Policy",
    "Refusal",
    "StoreUnavailablePolicy",
    "outage_verdict",
]


class MalformedImeiPolicy(enum.Enum):
    REJECT = "reject"  # S13: 5004 INVALID_AVP_VALUE with Failed-AVP; N5g-eir: 400
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
    BLOOM = "bloom"  # the last confirmed answer, else the filters: black positive -> blacklisted
    TOO_BUSY = "too_busy"  # 3004: the MME (or DRA) may try another EIR
    UNABLE_TO_COMPLY = "unable_to_comply"  # 5012: the MME applies its own policy


class Refusal(enum.Enum):
    """No verdict: what each interface answers instead."""

    MALFORMED = "malformed"  # S13 5004 INVALID_AVP_VALUE (Failed-AVP: the IMEI); N5g-eir 400
    TOO_BUSY = "too_busy"  # S13 3004 DIAMETER_TOO_BUSY; N5g-eir 500 SYSTEM_FAILURE
    UNABLE_TO_COMPLY = "unable_to_comply"  # S13 5012 DIAMETER_UNABLE_TO_COMPLY; N5g-eir 500


_STORE_REFUSALS = {StoreUnavailablePolicy.TOO_BUSY: Refusal.TOO_BUSY,
                   StoreUnavailablePolicy.UNABLE_TO_COMPLY: Refusal.UNABLE_TO_COMPLY}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Policy:
    """The node's ``policy`` section, and what it says for each case."""

    unknown_imei: UnknownPolicy = UnknownPolicy.WHITELISTED
    malformed_imei: MalformedImeiPolicy = MalformedImeiPolicy.REJECT
    imeisv_in_imei: ImeisvInImeiPolicy = ImeisvInImeiPolicy.REJECT
    store_unavailable: StoreUnavailablePolicy = StoreUnavailablePolicy.LAST_KNOWN

    def verdict(self, facts: Facts, imsi: str | None, imei14: str) -> Verdict:
        """What the lists say of ``imei14`` (and the IMSI), unlisted phones included."""
        return decide(facts, imsi, self.unknown_imei, imei14)

    def unlisted(self) -> Verdict:
        """An IMEI on no list (also: a PEI that is no IMEI, over N5g-eir)."""
        return policy_verdict(self.unknown_imei)

    def malformed(self, imei: str) -> Verdict | Refusal:
        """An IMEI that is not 14 or 15 digits (``imei`` as received, for the reason)."""
        mal = self.malformed_imei
        if mal is MalformedImeiPolicy.REJECT:
            return Refusal.MALFORMED
        return Verdict(EquipmentStatus[mal.name], Reason(Rule.MALFORMED, "", "policy.malformed_imei", imei, mal.value))

    def split_imeisv(self, digits: str) -> tuple[str, str] | None:
        """16 digits in the IMEI AVP: (IMEI, SVN) when they are to be read so, else None
        (malformed). ``digits`` must be 16 ASCII digits."""
        if self.imeisv_in_imei is ImeisvInImeiPolicy.SPLIT:
            return digits[:14], digits[14:]
        return None

    def unconfirmed(
        self, last_known: Facts | None, positives: frozenset[str], imsi: str | None, imei14: str
    ) -> tuple[Verdict, str] | Refusal:
        """A Bloom positive the store could not confirm: (verdict, detail for the log), or
        the refusal of the modes that answer with an error (``outage_verdict``)."""
        out = outage_verdict(self.store_unavailable, last_known, positives, imsi, self.unknown_imei, imei14)
        return out if out is not None else _STORE_REFUSALS[self.store_unavailable]


OUTAGE_DETAIL = "list store unavailable"
_GUARDED = frozenset({"black", "grey"})


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
