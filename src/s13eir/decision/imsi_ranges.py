"""IMSI ranges with a policy of their own (issue 17; Oracle's DSR EIR holds 1,000-100,000
of them): IoT fleets, test SIMs, an MVNO, judged apart from the operating mode. Pure.

A range is ``from``-``to`` (IMSIs of up to 15 digits) or a prefix (``21401999`` covers
every IMSI that starts so). Ranges may not overlap: one IMSI, one policy. A lookup is
O(log n): the ranges are kept sorted by their first IMSI, as 15-digit strings (a shorter
IMSI or bound is padded: with 0 for a start, 9 for an end, so that a prefix's range is
exactly the IMSIs that start with it).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import pairwise
from typing import Literal

import msgspec

RangePolicy = Literal["bypass", "whitelisted", "greylisted", "blacklisted"]


class ImsiRange(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    prefix: str | None = None
    start: str | None = msgspec.field(default=None, name="from")
    end: str | None = msgspec.field(default=None, name="to")
    policy: RangePolicy = "bypass"
    name: str = ""  # shown as the verdict's reason: "IoT fleet", "test SIMs"

    def bounds(self) -> tuple[str, str]:
        if self.prefix is not None:
            if self.start is not None or self.end is not None:
                raise ImsiRangeError(f"{self.label}: a prefix or from/to, not both")
            return _digits(self.prefix, "prefix").ljust(15, "0"), self.prefix.ljust(15, "9")
        if self.start is None or self.end is None:
            raise ImsiRangeError(f"{self.label}: needs a prefix, or from and to")
        lo, hi = _digits(self.start, "from").ljust(15, "0"), _digits(self.end, "to").ljust(15, "9")
        if lo > hi:
            raise ImsiRangeError(f"{self.label}: from {self.start} is after to {self.end}")
        return lo, hi

    @property
    def label(self) -> str:
        return self.name or self.prefix or f"{self.start}-{self.end}"


class ImsiRangeError(ValueError):
    pass


def _digits(value: str, what: str) -> str:
    if not (1 <= len(value) <= 15 and value.isascii() and value.isdigit()):
        raise ImsiRangeError(f"{what} {value!r}: 1 to 15 digits")
    return value


class ImsiRanges:
    """The ranges, sorted, for O(log n) lookups; refuses overlaps."""

    def __init__(self, ranges: Iterable[ImsiRange]) -> None:
        spans = sorted(((r.bounds(), r) for r in ranges), key=lambda s: s[0])
        for (a, ra), (b, rb) in pairwise(spans):
            if b[0] <= a[1]:
                raise ImsiRangeError(f"IMSI ranges {ra.label} and {rb.label} overlap")
        self._starts = [s[0][0] for s in spans]
        self._ends = [s[0][1] for s in spans]
        self._ranges = [s[1] for s in spans]

    def __len__(self) -> int:
        return len(self._ranges)

    def find(self, imsi: str) -> ImsiRange | None:
        """The range holding ``imsi``, if any."""
        if not self._starts:
            return None
        key = imsi.ljust(15, "0")
        i = bisect_right(self._starts, key) - 1
        if i >= 0 and key <= self._ends[i]:
            return self._ranges[i]
        return None
