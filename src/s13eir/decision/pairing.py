"""IMEI–IMSI pairing, both ways (issue 17; ITU-T Q.Sup73). Pure.

* An IMEI may be paired with up to ``max_imsis_per_imei`` IMSIs (default 10: Oracle's
  DSR EIR holds 10). Once it has a pair, an IMSI it is not paired with breaks the pairing.
* An IMSI may be locked to up to ``max_imeis_per_imsi`` IMEIs (a "fixed SIM", default 1
  when used): that IMSI in any other IMEI breaks the pairing.
* In authorization mode (``auto_pair``) a device seen with a subscriber is paired
  automatically while the IMEI has room; at the limit, a new IMSI breaks the pairing.

Each pair carries its origin (``import``, ``feed``, ``auto``, ``amnesty``, ``operator``)
and its time. :meth:`Pairings.check` says what a request does to the pairing; the caller
(the decision policy) turns a break into the configured verdict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

Origin = Literal["import", "feed", "auto", "amnesty", "operator"]


class PairingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = False
    max_imsis_per_imei: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    max_imeis_per_imsi: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    auto_pair: bool = False  # authorization mode: pair what is seen, within the limits
    broken: Literal["greylisted", "blacklisted"] = "greylisted"


class PairingResult(enum.Enum):
    NOT_PAIRED = "not paired"  # the IMEI has no pair and the IMSI no lock: pairing says nothing
    PAIRED = "paired"  # the request matches a pair
    AUTO_PAIRED = "auto-paired"  # authorization mode: this request made the pair
    IMEI_PAIRED_ELSEWHERE = "the IMEI is paired with other IMSIs"
    IMEI_FULL = "the IMEI has as many IMSIs as it may"
    IMSI_LOCKED_ELSEWHERE = "the IMSI is locked to other IMEIs"

    @property
    def breaks(self) -> bool:
        return self in (PairingResult.IMEI_PAIRED_ELSEWHERE, PairingResult.IMEI_FULL,
                        PairingResult.IMSI_LOCKED_ELSEWHERE)  # fmt: skip


class PairingError(ValueError):
    """A change the limits refuse."""


@dataclass(frozen=True, slots=True)
class Pair:
    origin: Origin
    t: float


class Pairings:
    """The pairs of a store (the embedded reference; Redis mirrors it)."""

    def __init__(self, config: PairingConfig) -> None:
        self.config = config
        self._imsis: dict[str, dict[str, Pair]] = {}  # IMEI -> IMSI -> pair, oldest first
        self._locks: dict[str, dict[str, Pair]] = {}  # IMSI -> IMEI -> lock (fixed SIM)

    def pairs(self, imei14: str) -> dict[str, Pair]:
        return dict(self._imsis.get(imei14, {}))

    def locks(self, imsi: str) -> dict[str, Pair]:
        return dict(self._locks.get(imsi, {}))

    def __len__(self) -> int:
        return sum(len(p) for p in self._imsis.values())

    def pair(self, imei14: str, imsi: str, origin: Origin, t: float) -> None:
        """Pair ``imsi`` with ``imei14``; refused past ``max_imsis_per_imei``. Pairing again
        keeps the first origin and time."""
        if not _join(self._imsis, imei14, imsi, Pair(origin, t), self.config.max_imsis_per_imei):
            raise PairingError(f"{imei14} has {len(self._imsis[imei14])} IMSIs, the most it may")

    def unpair(self, imei14: str, imsi: str) -> bool:
        return _leave(self._imsis, imei14, imsi)

    def lock(self, imsi: str, imei14: str, origin: Origin, t: float) -> None:
        """Lock ``imsi`` to ``imei14`` (a fixed SIM); refused past ``max_imeis_per_imsi``."""
        if not _join(self._locks, imsi, imei14, Pair(origin, t), self.config.max_imeis_per_imsi):
            raise PairingError(f"{imsi} is locked to {len(self._locks[imsi])} IMEIs, the most it may")

    def unlock(self, imsi: str, imei14: str) -> bool:
        return _leave(self._locks, imsi, imei14)

    def concerns(self, imei14: str, imsi: str | None) -> bool:
        """Whether pairing has anything to say of this request (a pair of the IMEI, a lock
        of the IMSI): two dictionary lookups, for the common case of neither."""
        return imei14 in self._imsis or (imsi is not None and imsi in self._locks)

    def check(self, imei14: str, imsi: str | None, t: float) -> PairingResult:
        """What the request does to the pairing; in authorization mode it may pair."""
        if imsi is None:
            return PairingResult.NOT_PAIRED  # nothing to compare (a check without IMSI)
        locks = self._locks.get(imsi)
        if locks and imei14 not in locks:
            return PairingResult.IMSI_LOCKED_ELSEWHERE
        pairs = self._imsis.get(imei14)
        if pairs and imsi in pairs:
            return PairingResult.PAIRED
        if self.config.auto_pair:
            if pairs and len(pairs) >= self.config.max_imsis_per_imei:
                return PairingResult.IMEI_FULL
            self.pair(imei14, imsi, "auto", t)
            return PairingResult.AUTO_PAIRED
        if pairs:
            return PairingResult.IMEI_PAIRED_ELSEWHERE
        return PairingResult.NOT_PAIRED if not locks else PairingResult.PAIRED


def _join(table: dict[str, dict[str, Pair]], key: str, member: str, pair: Pair, limit: int) -> bool:
    """``member`` under ``key`` (kept as it was if there already); False when full."""
    members = table.get(key)
    if members is not None and member in members:
        return True
    if members is not None and len(members) >= limit:
        return False
    table.setdefault(key, {})[member] = pair
    return True


def _leave(table: dict[str, dict[str, Pair]], key: str, member: str) -> bool:
    members = table.get(key)
    if members is None or member not in members:
        return False
    del members[member]
    if not members:
        del table[key]
    return True
