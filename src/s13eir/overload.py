"""Admission control: when the node is overloaded, and how much traffic to shed. Sans-IO.

The owner samples what the node measures every 100 ms and calls ``sample``: the event
loop's lag (how late a timer fired), the bytes received but not yet read over all
connections (``FIONREAD``: the queue in front of the node, which no timer inside the
process sees), the bytes read since the last sample, how long the oldest request waiting
for the store (a Redis confirmation) has waited, the requests in flight, the bytes queued
to the slowest peer, and whether a peer's receive window is full. The answer is one
number, the *reduction*: the percentage of requests to shed, 0 when all is well. It is
both what the node asks of DOIC peers (RFC 7683 OC-Reduction-Percentage, ``doic.py``)
and the share of other peers' requests it refuses with 3004 DIAMETER_TOO_BUSY
(``refuse``), cheaply, so that the rest are answered in time instead of everything
waiting in queues until the MMEs time out.

What is controlled is the *queueing delay* of a request arriving now: the loop's lag,
plus the time the node needs to read what already waits at the rate it has been reading
(``backlog / read rate``), plus the store's wait. An MME times out on delay, not on CPU:
the target (``delay_s``, 100 ms) is far below any MME's answer timeout. The controller is
AIMD on the admitted share, as TCP is on its window:

- while a signal is over its threshold (after ``sustain`` samples in a row at first),
  the share is cut at once in proportion to the excess (to target/delay of it, between a
  half and nine tenths), so that twice the capacity is met within a few samples, not a
  second of queue later; not while the delay is already falling by a fifth per sample
  (the last cut draining the queue);
- once every signal has stayed below half its threshold for ``hold_s``, the share comes
  back ``step`` points at the first sample, two steps at the next and so on (from 70 %
  to 0 in about a second), pausing just below the share at the last cut (what was too
  much then, as TCP CUBIC does with its window) and probing past it from one step again,
  so that under a lasting overload the share settles instead of swinging; a signal over
  half its threshold stops the ramp.

One sample over alone is a stall that is already over (a GC pause, a reload, the process
descheduled): the backlog it left drains at full speed, and refusing requests then would
only refuse what the node can answer (``sustain``).
"""

from __future__ import annotations

from dataclasses import dataclass

_MIN_CUT, _MAX_CUT = 0.5, 0.9  # one cut keeps between half and nine tenths of the admitted share
_WINDOW_FULL = 1.25  # the severity of a full receive window: a cut to four fifths per sample
_FALLING = 0.8  # a delay below this share of the last one is draining: no further cut


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    enabled: bool = True
    delay_s: float = 0.1  # queueing delay (lag + backlog / read rate) that means the node is behind
    in_flight: int = 4096  # requests waiting for I/O (Redis confirmations), all peers together
    write_buffer: int = 4 << 20  # bytes queued to one peer that it does not read
    input_backlog: int = 16 << 20  # bytes received over all connections, not yet read
    sustain: int = 2  # samples in a row over a threshold before shedding starts
    step: int = 2  # percentage points per sample the admitted share comes back
    max_reduction: int = 100
    hold_s: float = 0.5  # below half the thresholds this long before the share comes back
    validity_s: int = 10  # OC-Validity-Duration of the reports (RFC 7683: default 30, max 86400)

    def __post_init__(self) -> None:
        if not 0 < self.step <= 100 or not 0 < self.max_reduction <= 100:
            raise ValueError("overload step and max_reduction are percentages in 1..100")
        if (
            self.delay_s <= 0
            or min(self.in_flight, self.write_buffer, self.input_backlog, self.sustain) <= 0
            or self.hold_s < 0
        ):
            raise ValueError("overload thresholds must be positive")
        if not 0 < self.validity_s <= 86400:
            raise ValueError("overload validity_s must be in 1..86400 (RFC 7683 §7.4)")


class OverloadControl:
    """The node's load state, shared by every connection of one process."""

    __slots__ = ("_acc", "_admitted", "_calm_since", "_ceiling", "_last_at", "_last_delay", "_over", "_ramp",
                 "delay", "ended_at", "entered", "over", "peak", "reason", "reduction", "refused", "sequence",
                 "settings")  # fmt: skip

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
        self.delay = 0.0  # the last queueing-delay estimate, seconds
        self.over = False  # the last sample was over a threshold while shedding: still behind
        self.ended_at: float | None = None  # when the reduction last came back to 0
        self._admitted = 100.0  # percent of requests admitted: 100 - reduction, unrounded
        self._calm_since: float | None = None
        self._last_at: float | None = None
        self._last_delay = 0.0
        self._over = 0  # samples in a row over a threshold
        self._ramp = 0  # samples in a row the share came back: each adds ``step`` more
        self._ceiling = 100.0  # just below the share at the last cut: where the ramp pauses
        self._acc = 0

    def sample(self, now: float, lag_s: float, in_flight: int, write_buffer: int, input_backlog: int = 0,
               read_bytes: int = 0, store_wait_s: float = 0.0, window_full: bool = False) -> bool:  # fmt: skip
        """Take one measurement; True when the reduction changed. ``input_backlog`` is
        what waits now over all connections, ``read_bytes`` what was read since the last
        sample, ``store_wait_s`` how long the oldest request waiting for the store (a
        Redis confirmation) has waited, ``window_full`` whether a connection's receive
        queue is full: its peer is held back by the TCP window, so the queue in front of
        the node is longer than ``input_backlog`` says, by an amount no one here can see.
        That is over a threshold in itself, cutting the share by a fifth per sample until
        the window opens and the delay estimate sees the queue again."""
        s = self.settings
        if not s.enabled:
            return False
        dt = now - self._last_at if self._last_at is not None else 0.0
        self._last_at = now
        delay = lag_s + store_wait_s
        if input_backlog:
            # Nothing read in a whole interval while bytes wait: at least that interval more.
            delay += input_backlog * dt / read_bytes if read_bytes else dt
        self.delay = delay
        over = []
        severity = 0.0
        for value, limit, what in (
            (delay, s.delay_s, f"queueing delay {delay * 1000:.0f} ms > {s.delay_s * 1000:.0f} ms"),
            (in_flight, s.in_flight, f"{in_flight} requests in flight > {s.in_flight}"),
            (write_buffer, s.write_buffer, f"{write_buffer} bytes queued to a peer > {s.write_buffer}"),
            (input_backlog, s.input_backlog, f"{input_backlog} bytes waiting to be read > {s.input_backlog}"),
            (_WINDOW_FULL if window_full else 0.0, 1.0, "a peer's receive window is full"),
        ):
            severity = max(severity, value / limit)
            if value > limit:
                over.append(what)
        before = self.reduction
        self._over = self._over + 1 if over else 0
        # Draining since the last cut: wait for the cut to show before cutting again.
        falling = before and delay < self._last_delay * _FALLING and len(over) == 1 and delay > s.delay_s
        self._last_delay = delay
        if over or severity > 0.5:
            self._ramp = 0
        if over:
            self._calm_since = None
            if (before or self._over >= s.sustain) and not falling:
                self.reason = "; ".join(over)
                self._ceiling = self._admitted * _MAX_CUT
                self._admitted *= min(_MAX_CUT, max(_MIN_CUT, 1 / severity))
        elif before:
            if severity > 0.5:
                self._calm_since = None
            elif self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= s.hold_s:
                self._ramp += 1
                grown = self._admitted + s.step * self._ramp
                if self._admitted < self._ceiling <= grown:
                    # The share that was too much the last time: approached, then probed
                    # past from one step again, not overshot at full speed.
                    grown, self._ramp = self._ceiling, 0
                self._admitted = min(100.0, grown)
        self._admitted = max(self._admitted, 100.0 - s.max_reduction)
        self.reduction = min(s.max_reduction, round(100.0 - self._admitted))
        self.over = bool(over) and self.reduction > 0
        if self.reduction == 0:
            self._admitted = self._ceiling = 100.0
        if self.reduction != before:
            if before == 0:
                self.entered += 1
            elif self.reduction == 0:
                self.ended_at = now
                self.reason = ""
            self.peak = max(self.peak, self.reduction)
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
