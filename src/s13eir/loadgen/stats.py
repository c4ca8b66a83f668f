"""What one process measured, in a form that adds up across processes. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from .histogram import Histogram

__all__ = ["MAX_EXAMPLES", "Mismatch", "Stats"]

_K = TypeVar("_K")

MAX_EXAMPLES = 10  # mismatch examples kept per process (the count is always exact)


@dataclass(frozen=True, slots=True)
class Mismatch:
    imei: str
    imsi: str | None
    expected: str
    got: str
    mme: str


@dataclass
class Stats:
    """Counters of the measured requests (warm-up traffic only counts in ``warmup_*``)."""

    requests: int = 0
    answers: int = 0
    timeouts: int = 0
    mismatches: int = 0
    late_answers: int = 0  # answers that came after their request had timed out
    dropped: int = 0  # open loop: due while the connection's send buffer was full (counted as timeouts too)
    busy: int = 0  # answered 3004 DIAMETER_TOO_BUSY (the EIR shedding load): answered, not a mismatch
    abated: int = 0  # --doic: not sent, as the EIR's overload report (OC-OLR) asked
    doic_reports: int = 0  # --doic: new overload reports taken
    warmup_requests: int = 0
    warmup_answers: int = 0
    result_codes: dict[int, int] = field(default_factory=dict)
    equipment_status: dict[int, int] = field(default_factory=dict)
    http_codes: dict[int, int] = field(default_factory=dict)  # --sbi: HTTP status -> answers
    errors: dict[str, int] = field(default_factory=dict)
    examples: list[Mismatch] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)  # e.g. "mme3.s13eir.test: CEA 3010"
    latency: Histogram = field(default_factory=Histogram)  # µs from the intended send time
    send_lag: Histogram = field(default_factory=Histogram)  # open loop: µs from intended to written
    mmes_connected: int = 0
    # monotonic ns (CLOCK_MONOTONIC, comparable across processes on one host); 0 = not yet
    measure_start_ns: int = 0
    measure_end_ns: int = 0
    last_answer_ns: int = 0

    def error(self, kind: str, n: int = 1, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n
        if detail and len(self.error_examples) < MAX_EXAMPLES:
            self.error_examples.append(detail)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: Stats) -> None:
        for name in (
            "requests",
            "answers",
            "timeouts",
            "mismatches",
            "late_answers",
            "dropped",
            "busy",
            "abated",
            "doic_reports",
            "warmup_requests",
            "warmup_answers",
            "mmes_connected",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _add(self.result_codes, other.result_codes)
        _add(self.equipment_status, other.equipment_status)
        _add(self.http_codes, other.http_codes)
        _add(self.errors, other.errors)
        self.examples.extend(other.examples[: max(0, MAX_EXAMPLES - len(self.examples))])
        self.error_examples.extend(other.error_examples[: max(0, MAX_EXAMPLES - len(self.error_examples))])
        self.latency.merge(other.latency)
        self.send_lag.merge(other.send_lag)
        starts = [t for t in (self.measure_start_ns, other.measure_start_ns) if t]
        self.measure_start_ns = min(starts) if starts else 0
        self.measure_end_ns = max(self.measure_end_ns, other.measure_end_ns)
        self.last_answer_ns = max(self.last_answer_ns, other.last_answer_ns)

    def elapsed_s(self, now_ns: int = 0) -> float:
        """Seconds measured: from the measurement start to the end of the window or the
        last measured answer, whichever is later (``now_ns`` while still running)."""
        if not self.measure_start_ns:
            return 0.0
        end = max(self.measure_end_ns, self.last_answer_ns, now_ns)
        return max(0.0, (end - self.measure_start_ns) / 1e9)


def _add(mine: dict[_K, int], theirs: dict[_K, int]) -> None:
    for key, n in theirs.items():
        mine[key] = mine.get(key, 0) + n
