"""A log-linear latency histogram (HDR-style), mergeable across processes. Pure.

Values are integer microseconds. Below 256 µs every value has its own bucket; above,
each power of two is split into 128 equal buckets, so a bucket is at most 1/128
(0.78 %) of its lower bound wide and the midpoint reported for it is within 0.4 % of
any value in it. 60 s (the largest value kept apart) needs 2,533 buckets: a flat list
of ints that is cheap to record into, to ship to another process and to add up.

Why not store samples: a 60 s run at 100,000 answers/s would keep six million of
them, and merging percentiles from several processes is only exact on counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_VALUE_US", "Histogram", "bucket_bounds", "bucket_index"]

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS  # buckets per power of two
_LINEAR = 2 * _SUB  # values below this are exact
MAX_VALUE_US = 60_000_000  # larger values are counted in the last bucket (the exact max is kept)


def bucket_index(value: int) -> int:
    """The bucket of ``value`` µs: negative counts as 0, above MAX_VALUE_US as MAX_VALUE_US."""
    if value < _LINEAR:
        return value if value > 0 else 0
    if value > MAX_VALUE_US:
        value = MAX_VALUE_US
    shift = value.bit_length() - _SUB_BITS - 1
    return (shift << _SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value that fall in bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index >> _SUB_BITS) - 1
    mantissa = index - (shift << _SUB_BITS)
    return mantissa << shift, ((mantissa + 1) << shift) - 1


_BUCKETS = bucket_index(MAX_VALUE_US) + 1


class Histogram:
    """Counts per bucket plus the exact count, sum, min and max."""

    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        """Count one value (µs). Called once per answer, so the index is computed inline."""
        if value < _LINEAR:
            if value < 0:
                value = 0
            index = value
        else:
            v = value if value <= MAX_VALUE_US else MAX_VALUE_US
            shift = v.bit_length() - _SUB_BITS - 1
            index = (shift << _SUB_BITS) + (v >> shift)
        self.counts[index] += 1
        if self.total == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += 1
        self.sum += value

    def record_many(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this one: the histogram of the union of both samples."""
        if other.total == 0:
            return
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100) by nearest rank, within 0.4 % (0 when empty).

        The bucket midpoint is clamped to the exact min and max, so p100 is the max."""
        if self.total == 0:
            return 0
        if p >= 100:
            return self.max
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for index, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                low, high = bucket_bounds(index)
                return min(max((low + high) // 2, self.min), self.max)
        return self.max  # unreachable while total == sum(counts)

    def percentiles(self, ps: Iterable[float]) -> dict[float, int]:
        return {p: self.percentile(p) for p in ps}

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A sparse, JSON-able form (``counts`` maps bucket index to count)."""
        return {
            "counts": {str(i): c for i, c in enumerate(self.counts) if c},
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        h = cls()
        for key, c in data["counts"].items():
            h.counts[int(key)] = int(c)
        h.total, h.sum, h.min, h.max = int(data["total"]), int(data["sum"]), int(data["min"]), int(data["max"])
        return h

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        h = Histogram.from_dict(state)
        self.counts, self.total, self.sum, self.min, self.max = h.counts, h.total, h.sum, h.min, h.max
