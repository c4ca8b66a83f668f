"""Admission control: when the node is overloaded, and how much traffic to shed. Sans-IO.

The owner samples what the node measures every 100 ms (the event loop's lag, requests
waiting for I/O, bytes received but not yet read on the busiest connection, bytes queued
to the slowest peer) and calls ``sample``. The answer is one number, the *reduction*: the percentage of requests to
shed, 0 when all is well. It is both what the node asks of DOIC peers (RFC 7683
OC-Reduction-Percentage, ``doic.py``) and the share of other peers' requests it refuses
with 3004 DIAMETER_TOO_BUSY (``refuse``), cheaply, so that the rest are answered in time
instead of everything waiting in queues until the MMEs time out.

The controller is additive increase / additive decrease with hysteresis: once
``sustain`` samples in a row are over a threshold, each such sample raises the reduction
by ``step`` points; it comes down only after ``hold_s`` below half of every threshold, one
step per sample, so that one quiet sample inside an overload does not open the gates
again. One sample over alone is a stall that is already over (a GC pause, a reload, the
process descheduled): the backlog it left drains at full speed, and refusing requests
then would only refuse what the node can answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    enabled: bool = True
    lag_s: float = 0.05  # event-loop lag (one sample) that means the node cannot keep up
    in_flight: int = 4096  # requests waiting for I/O (Redis confirmations), all peers together
    write_buffer: int = 4 << 20  # bytes queued to one peer that it does not read
    input_backlog: int = 1 << 20  # bytes received on one connection, not yet read: its queue
    sustain: int = 2  # samples in a row over a threshold before shedding starts
    step: int = 10  # percentage points per sample, up and down
    max_reduction: int = 100
    hold_s: float = 2.0  # below half the thresholds this long before the reduction comes down
    validity_s: int = 10  # OC-Validity-Duration of the reports (RFC 7683: default 30, max 86400)

    def __post_init__(self) -> None:
        if not 0 < self.step <= 100 or not 0 < self.max_reduction <= 100:
            raise ValueError("overload step and max_reduction are percentages in 1..100")
        if (
            self.lag_s <= 0
            or min(self.in_flight, self.write_buffer, self.input_backlog, self.sustain) <= 0
            or self.hold_s < 0
        ):
            raise ValueError("overload thresholds must be positive")
        if not 0 < self.validity_s <= 86400:
            raise ValueError("overload validity_s must be in 1..86400 (RFC 7683 §7.4)")


class OverloadControl:
    """The node's load state, shared by every connection of one process."""

    __slots__ = ("_acc", "_calm_since", "_over", "ended_at", "entered", "peak", "reason", "reduction", "refused",
                 "sequence", "settings")  # fmt: skip

    def __init__(self, settings: OverloadSettings, sequence0: int) -> None:
        """``sequence0`` seeds OC-Sequence-Number: it must never go back, so the owner
        passes the wall clock in milliseconds (a restarted node starts above the last)."""
        self.settings = settings
        self.reduction = 0
        self.sequence = sequence0
        self.reason = ""  # what crossed its threshold, for logs and /readyz
        self.refused = 0  # requests refused with 3004 (counted by the connections)
        self.entered = 0  # times the node went from 0 to a reduction
        self.peak = 0
        self.ended_at: float | None = None  # when the reduction last came back to 0
        self._calm_since: float | None = None
        self._over = 0  # samples in a row over a threshold
        self._acc = 0

    def sample(self, now: float, lag_s: float, in_flight: int, write_buffer: int, input_backlog: int = 0) -> bool:
        """Take one measurement; True when the reduction changed."""
        s = self.settings
        if not s.enabled:
            return False
        over = []
        if lag_s > s.lag_s:
            over.append(f"event-loop lag {lag_s * 1000:.0f} ms > {s.lag_s * 1000:.0f} ms")
        if in_flight > s.in_flight:
            over.append(f"{in_flight} requests in flight > {s.in_flight}")
        if write_buffer > s.write_buffer:
            over.append(f"{write_buffer} bytes queued to a peer > {s.write_buffer}")
        if input_backlog > s.input_backlog:
            over.append(f"{input_backlog} bytes waiting to be read > {s.input_backlog}")
        before = self.reduction
        self._over = self._over + 1 if over else 0
        if over:
            self._calm_since = None
        if self._over >= s.sustain:
            self.reason = "; ".join(over)
            self.reduction = min(s.max_reduction, self.reduction + s.step)
            if before == 0:
                self.entered += 1
            self.peak = max(self.peak, self.reduction)
        elif self.reduction and not over:
            calm = (lag_s <= s.lag_s / 2 and in_flight <= s.in_flight // 2 and write_buffer <= s.write_buffer // 2
                    and input_backlog <= s.input_backlog // 2)  # fmt: skip
            if not calm:
                self._calm_since = None
            elif self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= s.hold_s:
                self.reduction = max(0, self.reduction - s.step)
                if self.reduction == 0:
                    self.ended_at = now
                    self.reason = ""
        if self.reduction != before:
            self.sequence += 1  # RFC 7683 §5.5.2: a new report content, a higher sequence number
            return True
        return False

    def refuse(self) -> bool:
        """Whether to refuse this request: ``reduction`` of every 100, spread evenly. The
        caller counts what it does refuse in ``refused``."""
        self._acc += self.reduction
        if self._acc >= 100:
            self._acc -= 100
            return True
        return False

    def reporting(self, now: float) -> bool:
        """Whether DOIC answers carry an OC-OLR: while overloaded, and for one validity
        period after, with validity 0, so that a peer still applying the last report
        learns that it ended (RFC 7683 §5.5.3) instead of waiting for it to expire."""
        if self.reduction:
            return True
        return self.ended_at is not None and now - self.ended_at < self.settings.validity_s
