"""Event-loop lag: how late a periodic timer fires.

Every Diameter connection of a node is served by one event loop, so anything that holds
the loop (a long callback, the process being descheduled by the kernel or the
hypervisor, swapping) delays every answer queued behind it. Answer latency measured per
read cannot see that: the time is lost before the read. A timer armed every
``interval`` seconds and measured on wake-up can: its lateness is a lower bound of the
stall that covered it. Exposed as ``s13eir_event_loop_lag_seconds``; buckets start at
1 ms, since timers of some event loops (uvloop's) are kept in milliseconds and sub-ms
lateness is their rounding, not a stall.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable

__all__ = ["LAG_BUCKETS", "LoopLag", "LoopLagProbe"]

LAG_BUCKETS: tuple[float, ...] = (1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.25, 0.5, 1.0)


class LoopLag:
    """Lateness samples: counts per bucket (the last above 1 s) and their sum."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LAG_BUCKETS) + 1)
        self.sum = 0.0

    def record(self, lag: float) -> None:
        lag = max(lag, 0.0)  # a timer that fires early is not late
        self.buckets[bisect_left(LAG_BUCKETS, lag)] += 1
        self.sum += lag

    @property
    def count(self) -> int:
        return sum(self.buckets)


class LoopLagProbe:
    """Arms a timer every ``interval`` seconds on the running loop and records its lateness."""

    def __init__(
        self,
        lag: LoopLag,
        interval: float,
        clock: Callable[[], float] = time.perf_counter,
        on_sample: Callable[[float], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.lag = lag
        self.on_sample = on_sample  # each lateness, as measured (admission control reads it)
        self.interval = interval
        self._clock = clock
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._arm(self._clock())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        late = now - self._due
        self.lag.record(late)
        self._arm(now)
        if self.on_sample is not None:
            self.on_sample(max(late, 0.0))
