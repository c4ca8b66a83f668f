"""Open-loop send times: when each request is meant to leave, whatever happens. Pure.

Request ``k`` (0, 1, 2, ... over the whole run, all processes together) is due at
``k / rate`` seconds after the start and belongs to MME ``k mod total_mmes``: the load
is spread evenly and each MME sends at ``rate / total_mmes`` requests/s. A process
that drives MMEs ``first .. first + mmes - 1`` walks only its own slots, in time order,
without touching the others.

Latency is measured from these intended times, not from when the request was
actually written: a generator (or an EIR pushing back) that falls behind then shows
up as latency instead of silently sending less (no coordinated omission).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OpenLoopSchedule"]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class OpenLoopSchedule:
    rate: float  # requests per second over all MMEs of all processes
    total_mmes: int
    first_mme: int = 0  # this process's MMEs: first_mme .. first_mme + mmes - 1
    mmes: int = 0  # 0 means all of them

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number, got {self.rate!r}")
        if self.total_mmes < 1:
            raise ValueError("total_mmes must be at least 1")
        if self.mmes == 0:
            object.__setattr__(self, "mmes", self.total_mmes - self.first_mme)
        if self.first_mme < 0 or self.mmes < 1 or self.first_mme + self.mmes > self.total_mmes:
            raise ValueError(f"MMEs {self.first_mme}..{self.first_mme + self.mmes - 1} not within {self.total_mmes}")

    def offset_ns(self, k: int) -> int:
        """Intended send time of global slot ``k``, in ns after the start (non-decreasing in k)."""
        return int(k * _NS / self.rate)

    def mme_of(self, k: int) -> int:
        """The MME (0-based, over all processes) that sends global slot ``k``."""
        return k % self.total_mmes

    def global_slot(self, m: int) -> int:
        """The global slot of this process's ``m``-th request (0-based, in time order)."""
        rounds, r = divmod(m, self.mmes)
        return rounds * self.total_mmes + self.first_mme + r

    def own_slots_before(self, k: int) -> int:
        """How many of this process's slots have a global index below ``k``."""
        if k <= 0:
            return 0
        rounds, rest = divmod(k, self.total_mmes)
        return rounds * self.mmes + min(max(rest - self.first_mme, 0), self.mmes)

    def first_slot_at(self, offset_ns: int) -> int:
        """The first global slot due at or after ``offset_ns``."""
        if offset_ns <= 0:
            return 0
        k = math.ceil(offset_ns * self.rate / _NS)
        # Float rounding can put the estimate one off either way; two steps each suffice.
        for _ in range(4):
            if k > 0 and self.offset_ns(k - 1) >= offset_ns:
                k -= 1
            elif self.offset_ns(k) < offset_ns:
                k += 1
            else:
                break
        return k
