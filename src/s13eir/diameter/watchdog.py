"""The RFC 3539 watchdog (Appendix A) for one open connection, as a table of
(state, pending, event) -> (actions, next state). Time and jitter come in as
arguments; nothing here reads a clock.

A responder has no alternate path to fail over to, so Failover()/Failback()
are no-ops and DOWN means: close this connection.
"""

from __future__ import annotations

import enum
from typing import Protocol


class WatchdogState(enum.Enum):
    OKAY = "okay"
    SUSPECT = "suspect"
    DOWN = "down"


class WatchdogAction(enum.Enum):
    NONE = "none"
    SEND_DWR = "send_dwr"
    CLOSE = "close"


class Random(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


MIN_TW = 6.0  # RFC 3539 §3.4.1: Tw MUST NOT be set lower than 6 seconds
JITTER = 2.0  # RFC 3539 §3.4.1: ±2 s of jitter on every SetWatchdog()


class Watchdog:
    __slots__ = ("_rng", "_set_at", "deadline", "last_rx", "pending", "state", "tw")

    def __init__(self, tw: float, rng: Random, now: float) -> None:
        self.tw = max(tw, MIN_TW)
        self._rng = rng
        self.state = WatchdogState.OKAY
        self.pending = False
        self.deadline = 0.0
        self.last_rx = now
        self._set_at = now
        self._set(now)

    def _set(self, now: float) -> None:
        # SetWatchdog(): Tw plus uniform jitter, so that many peers restarted together
        # do not send their DWRs in lock step.
        self._set_at = now
        self.deadline = now + self.tw + self._rng.uniform(-JITTER, JITTER)

    def on_traffic(self, now: float) -> None:
        """OKAY, Receive non-DWA: SetWatchdog(). Done lazily: the new deadline is computed
        when the old one expires, so that the per-request cost is one store."""
        if self.state is WatchdogState.OKAY:
            self.last_rx = now
        else:
            self.on_message(now, False)

    def on_message(self, now: float, is_dwa: bool) -> None:
        #   OKAY     Receive DWA         Pending = FALSE; SetWatchdog()        OKAY
        #   OKAY     Receive non-DWA     SetWatchdog()                         OKAY
        #   SUSPECT  Receive DWA         Pending = FALSE; Failback();
        #                                SetWatchdog()                         OKAY
        #   SUSPECT  Receive non-DWA     Failback(); SetWatchdog()             OKAY
        if self.state is WatchdogState.DOWN:
            return
        if is_dwa:
            self.pending = False
        self.state = WatchdogState.OKAY
        self.last_rx = now
        self._set(now)

    def on_timer(self, now: float) -> WatchdogAction:
        if now < self.deadline or self.state is WatchdogState.DOWN:
            return WatchdogAction.NONE
        if self.last_rx > self._set_at:
            self._set(self.last_rx)  # traffic arrived since SetWatchdog(): the timer was reset then
            if now < self.deadline:
                return WatchdogAction.NONE
        if self.state is WatchdogState.OKAY and not self.pending:
            #   OKAY   Timer expires & !Pending   SetWatchdog(); Pending = TRUE;   OKAY
            #                                     SendWatchdog()
            self.pending = True
            self._set(now)
            return WatchdogAction.SEND_DWR
        if self.state is WatchdogState.OKAY:
            #   OKAY   Timer expires & Pending    Failover(); SetWatchdog()        SUSPECT
            self.state = WatchdogState.SUSPECT
            self._set(now)
            return WatchdogAction.NONE
        #   SUSPECT  Timer expires             CloseConnection()                 DOWN
        self.state = WatchdogState.DOWN
        return WatchdogAction.CLOSE
