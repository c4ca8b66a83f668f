"""What every simulated peer shares (an MME over Diameter, an AMF over HTTP/2): the
workload deck, the closed-loop top-up, request and drop accounting, timeouts, and
mismatch recording. Subclasses provide ``send`` and the wire protocol."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any, cast

from .imeis import Combo
from .stats import MAX_EXAMPLES, Mismatch, Stats
from .wire import outcome_name


class Traffic:
    """What every simulated peer of a process sends: pre-encoded requests (ECR bodies or
    N5g-eir paths), expected outcomes, order."""

    def __init__(self, combos: Sequence[Combo], deck: Sequence[int], bodies: Sequence[bytes]) -> None:
        self.combos = combos
        self.deck = deck
        self.bodies = bodies
        self.expected = [c.expected for c in combos]


class PeerDriver(asyncio.Protocol):
    """Drive with ``send``/``flush`` (open loop) or ``concurrency`` (closed loop)."""

    def __init__(self, name: str, traffic: Traffic, stats: Stats, deck_offset: int, concurrency: int,
                 budget: int) -> None:  # fmt: skip
        self.origin_host = name
        self._traffic = traffic
        self._deck = traffic.deck
        self._deck_pos = deck_offset % len(traffic.deck)
        self._expected = traffic.expected
        self.stats = stats
        self.concurrency = concurrency  # closed loop: requests kept outstanding; 0 = open loop
        self.budget = budget  # measured requests this peer may still send; -1 = no cap
        self.sending = False  # closed loop: top up after answers and timeouts
        self.measuring = False  # requests sent now count (False during warm-up)
        self.pending: dict[int, tuple[int, int, bool]] = {}  # request id -> (intended ns, combo, measured)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leaving = False  # a close now is expected (a disconnect under way)

    def _attach(self, transport: asyncio.BaseTransport) -> asyncio.Transport:
        """Keep the transport, with Nagle off: requests are small and latency is measured.
        cast, not isinstance: uvloop's transports do not derive from asyncio.Transport."""
        self.transport = tr = cast(asyncio.Transport, transport)
        sock = tr.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return tr

    def _lost(self, ready: asyncio.Future[Any], before_ready: str, exc: Exception | None) -> None:
        """The connection went away: fail ``ready`` if it was not reached, count an
        unexpected close and the measured requests left unanswered, and resolve ``closed``."""
        if not ready.done():
            ready.set_exception(ConnectionError(f"{before_ready}: {exc or 'EOF'}"))
        elif not self._leaving:
            self.stats.error("connection_lost")
        lost = sum(1 for _, _, measured in self.pending.values() if measured)
        if lost:
            self.stats.error("unanswered_connection_lost", lost)
        self.pending.clear()
        self.sending = False
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, intended_ns: int, measured: bool) -> bool:
        raise NotImplementedError

    def _count_request(self, measured: bool, full: bool) -> bool:
        """Count one request; False (and counted as dropped) when the send buffer is ``full``."""
        if measured:
            self.stats.requests += 1
        else:
            self.stats.warmup_requests += 1
        if full:
            if measured:
                self.stats.dropped += 1
                self.stats.timeouts += 1
            return False
        return True

    def _count_answer(self, now: int, entry: tuple[int, int, bool]) -> bool:
        """Count one answer; True when it is measured, its latency then recorded."""
        intended, _, measured = entry
        stats = self.stats
        if not measured:
            stats.warmup_answers += 1
            return False
        stats.answers += 1
        stats.last_answer_ns = now
        stats.latency.record((now - intended) // 1000)
        return True

    def _next_combo(self) -> int:
        deck = self._deck
        combo = deck[self._deck_pos]
        self._deck_pos = (self._deck_pos + 1) % len(deck)
        return combo

    def _mismatch(self, combo: int, got_name: str) -> None:
        stats = self.stats
        stats.mismatches += 1
        if len(stats.examples) < MAX_EXAMPLES:
            c = self._traffic.combos[combo]
            stats.examples.append(Mismatch(c.imei, c.imsi, outcome_name(c.expected), got_name, self.origin_host))

    def _fatal(self, kind: str, detail: str = "") -> None:
        self.stats.error(kind, detail=f"{self.origin_host}: {detail}" if detail else "")
        self.sending = False
        if self.transport is not None:
            self.transport.abort()

    def top_up(self, now: int) -> None:
        """Closed loop: send until ``concurrency`` requests are outstanding (or the budget is spent)."""
        want = self.concurrency - len(self.pending)
        measuring = self.measuring
        while want > 0 and self.budget != 0:
            if not self.send(now, measuring):
                break
            if measuring and self.budget > 0:
                self.budget -= 1
            want -= 1

    def expire(self, now: int, timeout_ns: int) -> None:
        """Count the requests unanswered after ``timeout_ns`` as timeouts (oldest first)."""
        cutoff = now - timeout_ns
        expired: list[int] = []
        for rid, (intended, _, _) in self.pending.items():
            if intended > cutoff:
                break
            expired.append(rid)
        for rid in expired:
            if self.pending.pop(rid)[2]:
                self.stats.timeouts += 1
