"""The asyncio driver of one process: its MMEs through connect, warm-up, measurement,
drain and DPR.

Closed loop (``--concurrency``): each MME keeps C requests outstanding and sends the
next one from ``data_received`` as answers come back, one write per read.

Open loop (``--rate``): the process walks its slots of the shared schedule and writes
every request that is due in one batch per MME per loop turn. Between sends it sleeps
when the next one is more than ~2 ms away and otherwise only yields to the event loop:
asyncio timers (uvloop's especially) have millisecond granularity, and oversleeping
would add the generator's own lateness to every latency measured. That costs a busy
core, as any polling open-loop generator does; ``send_lag`` in the report shows how
closely the schedule was kept. ``--nap-us N`` sleeps N µs between turns instead (a
blocking sleep with fine timer slack: it ends within tens of µs, where an event-loop
timer rounds to ms): requests then leave in somewhat larger batches and answers are
read up to a nap late, both counted in the latency, and the core is left idle part of
the time. On a shared virtual machine whose two cores are both kept busy, the host
takes a core away for milliseconds now and then (bench/stalls.py shows it), which
reaches the measured tail; napping avoids provoking that.

Every phase is bounded in time: connecting and the CER by --timeout, the run by
--warmup + --duration, the drain by --timeout, the DPR/DPA exchange by min(--timeout, 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .amf import AmfConnection, parse_sbi_url, pei_path
from .connection import CerRefused, MmeConnection
from .driver import Traffic
from .imeis import Workload
from .schedule import OpenLoopSchedule
from .stats import Stats
from .wire import ecr_body

__all__ = ["LoadParams", "ProcessRun", "Share", "build_traffic", "mme_budget", "split_mmes"]

_SWEEP_NS = 50_000_000  # timeouts are checked (and closed loops topped up) this often
_SPIN_NS = 2_000_000  # open loop: closer than this to the next send, yield instead of sleeping
_WAKE_EARLY_NS = 1_000_000
_MAX_BATCH = 4096  # open loop: sends per loop turn at most, so that answers keep being read
_DPA_WAIT_S = 5.0
_NS = 1_000_000_000
_PR_SET_TIMERSLACK = 29

Conn = MmeConnection | AmfConnection


@dataclass(frozen=True, slots=True)
class LoadParams:
    host: str
    port: int
    mmes: int = 1
    realm: str = "s13eir.test"
    concurrency: int = 8  # closed loop, when rate is None
    rate: float | None = None  # open loop: requests/s over all MMEs
    duration: float = 10.0
    warmup: float = 1.0
    timeout: float = 5.0
    requests: int | None = None  # cap on measured requests
    procs: int = 1
    seed: int = 0
    sbi: str | None = None  # http://HOST:PORT[/prefix]: AMFs over N5g-eir (HTTP/2) instead of MMEs over S13
    nap_us: float = 0.0  # open loop: sleep this long between loop turns instead of polling (0: poll)
    doic: bool = False  # the MMEs speak RFC 7683 DOIC: announce it, shed what the EIR's reports ask

    def origin_host(self, mme: int) -> str:
        return f"mme{mme + 1}.{self.realm}"


@dataclass(frozen=True, slots=True)
class Share:
    """The MMEs one process drives: first .. first + mmes - 1 (0-based over the run)."""

    first: int
    mmes: int


def split_mmes(mmes: int, procs: int) -> list[Share]:
    """Spread MMEs over at most ``procs`` processes, as evenly as possible."""
    procs = max(1, min(procs, mmes))
    base, extra = divmod(mmes, procs)
    shares: list[Share] = []
    first = 0
    for p in range(procs):
        n = base + (1 if p < extra else 0)
        shares.append(Share(first, n))
        first += n
    return shares


def fine_timer_slack() -> None:
    """Let this thread's short sleeps end on time (Linux: timer slack 1 ns instead of the
    default 50 µs, PR_SET_TIMERSLACK); elsewhere, or if refused, sleeps are just coarser."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def mme_budget(mme: int, mmes: int, cap: int | None) -> int:
    """Closed loop: how many measured requests MME ``mme`` sends under a total cap (-1: none)."""
    if cap is None:
        return -1
    base, extra = divmod(cap, mmes)
    return base + (1 if mme < extra else 0)


def build_traffic(workload: Workload, sbi: str | None = None) -> Traffic:
    """Encode each combination's ECR body once (with ``sbi``: its N5g-eir request path)."""
    if sbi is not None:
        prefix = parse_sbi_url(sbi)[2]
        bodies = [pei_path(c, prefix) for c in workload.combos]
    else:
        bodies = [ecr_body(c.imei, c.imsi, c.sv) for c in workload.combos]
    return Traffic(workload.combos, workload.deck, bodies)


class ProcessRun:
    """``connect`` then ``run`` then ``close``; ``stats`` and ``phase`` can be read meanwhile."""

    def __init__(self, params: LoadParams, traffic: Traffic, share: Share, epoch: int) -> None:
        self.params = params
        self.traffic = traffic
        self.share = share
        self.epoch = epoch
        self.stats = Stats()
        self.phase = "connecting"
        self.conns: list[Conn | None] = []
        self._timeout_ns = int(params.timeout * 1e9)

    @property
    def live(self) -> list[Conn]:
        return [c for c in self.conns if c is not None and not c.closed.done()]

    async def connect(self) -> int:
        """Open every MME's connection and exchange CER/CEA; returns how many are up."""
        share = self.share
        self.conns = list(await asyncio.gather(*(self._connect(share.first + i) for i in range(share.mmes))))
        up = sum(c is not None for c in self.conns)
        self.stats.mmes_connected = up
        return up

    async def _connect(self, mme: int) -> Conn | None:
        if self.params.sbi is not None:
            return await self._connect_amf(mme)
        p = self.params
        host = p.origin_host(mme)
        rng = random.Random(f"{p.seed}/{mme}")
        # RFC 6733 §3: End-to-End ids start with the low 12 bits of the time, then random bits.
        ids = (rng.getrandbits(32), ((self.epoch & 0xFFF) << 20) | rng.getrandbits(20))
        deck_offset = mme * len(self.traffic.deck) // p.mmes
        concurrency = 0 if p.rate is not None else p.concurrency
        budget = mme_budget(mme, p.mmes, p.requests) if p.rate is None else -1
        loop = asyncio.get_running_loop()

        def factory() -> MmeConnection:
            return MmeConnection(
                host, p.realm, self.epoch, ids, self.traffic, self.stats, deck_offset, concurrency, budget, p.doic
            )

        try:
            _, conn = await asyncio.wait_for(loop.create_connection(factory, p.host, p.port), p.timeout)
        except (OSError, TimeoutError) as exc:
            self.stats.error(
                "connect_failed", detail=f"{host}: cannot connect to {p.host}:{p.port}: {exc or 'timeout'}"
            )
            return None
        try:
            realm = await asyncio.wait_for(asyncio.shield(conn.ready), p.timeout)
        except CerRefused as exc:
            self.stats.error("cer_refused", detail=f"{host}: {exc}")
        except TimeoutError:
            self.stats.error("cer_timeout", detail=f"{host}: no CEA within {p.timeout} s")
        except ConnectionError as exc:
            self.stats.error("connect_failed", detail=f"{host}: {exc}")
        else:
            conn.start(realm, self.epoch)
            return conn
        if conn.transport is not None:
            conn.transport.abort()
        return None

    async def _connect_amf(self, amf: int) -> AmfConnection | None:
        p = self.params
        name = f"amf{amf + 1}"
        deck_offset = amf * len(self.traffic.deck) // p.mmes
        concurrency = 0 if p.rate is not None else p.concurrency
        budget = mme_budget(amf, p.mmes, p.requests) if p.rate is None else -1
        authority = f"[{p.host}]:{p.port}" if ":" in p.host else f"{p.host}:{p.port}"
        loop = asyncio.get_running_loop()

        def factory() -> AmfConnection:
            return AmfConnection(name, authority, self.traffic, self.stats, deck_offset, concurrency, budget)

        try:
            _, conn = await asyncio.wait_for(loop.create_connection(factory, p.host, p.port), p.timeout)
        except (OSError, TimeoutError) as exc:
            self.stats.error(
                "connect_failed", detail=f"{name}: cannot connect to {p.host}:{p.port}: {exc or 'timeout'}"
            )
            return None
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), p.timeout)
        except TimeoutError:
            self.stats.error("settings_timeout", detail=f"{name}: no HTTP/2 SETTINGS within {p.timeout} s")
        except ConnectionError as exc:
            self.stats.error("connect_failed", detail=f"{name}: {exc}")
        else:
            return conn
        if conn.transport is not None:
            conn.transport.abort()
        return None

    async def run(self, start_ns: int, stop: asyncio.Event) -> None:
        """Warm-up and measurement from ``start_ns`` (CLOCK_MONOTONIC), then the drain."""
        p = self.params
        measure_start = start_ns + int(p.warmup * 1e9)
        self.stats.measure_start_ns = measure_start
        self.stats.measure_end_ns = measure_start + int(p.duration * 1e9)
        delay = (start_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if self.live:
            if p.rate is None:
                await self._closed_loop(measure_start, stop)
            else:
                await self._open_loop(start_ns, p.rate, stop)
        await self._drain()

    async def _closed_loop(self, measure_start: int, stop: asyncio.Event) -> None:
        end = self.stats.measure_end_ns
        now = time.monotonic_ns()
        measuring = now >= measure_start
        self.phase = "measuring" if measuring else "warmup"
        for c in self.live:
            c.measuring = measuring
            c.sending = True
            c.top_up(now)
            c.flush()
        while not stop.is_set():
            now = time.monotonic_ns()
            if not measuring and now >= measure_start:
                measuring = True
                self.phase = "measuring"
                for c in self.live:
                    c.measuring = True
            if now >= end:
                break
            live = self.live
            if not live or (measuring and all(c.budget == 0 for c in live)):
                self.stats.measure_end_ns = measure_start  # capped: the last answer ends the window
                break
            for c in live:
                c.expire(now, self._timeout_ns)
                c.top_up(now)
                c.flush()
            wake = min(now + _SWEEP_NS, end, measure_start if not measuring else end)
            await asyncio.sleep(max(0, wake - time.monotonic_ns()) / 1e9)
        if stop.is_set():  # stopped early (Ctrl-C): the window ends now
            self.stats.measure_end_ns = min(self.stats.measure_end_ns, max(measure_start, time.monotonic_ns()))
        for conn in self.conns:
            if conn is not None:
                conn.sending = False

    async def _open_loop(self, start: int, rate: float, stop: asyncio.Event) -> None:
        p, share, stats = self.params, self.share, self.stats
        sched = OpenLoopSchedule(rate, p.mmes, share.first, share.mmes)
        warm_slots = sched.first_slot_at(int(p.warmup * 1e9))
        end_slot = sched.first_slot_at(int((p.warmup + p.duration) * 1e9))
        if p.requests is not None and warm_slots + p.requests < end_slot:
            end_slot = warm_slots + p.requests
            stats.measure_end_ns = start + sched.offset_ns(end_slot)
        limit = sched.own_slots_before(end_slot)
        conns = self.conns
        # Slot m of this process is global slot k, sent by conns[r]: walked incrementally
        # (sched.global_slot(m) and sched.offset_ns(k), inlined: this loop runs per request).
        skip = p.mmes - share.mmes
        own = share.mmes
        k, r = share.first, 0
        m = 0
        next_sweep = start
        record_lag = stats.send_lag.record
        nap = p.nap_us / 1e6
        if nap:
            fine_timer_slack()
        while m < limit and not stop.is_set():
            now = time.monotonic_ns()
            rel = now - start
            self.phase = "measuring" if k >= warm_slots else "warmup"
            batch_end = min(limit, m + _MAX_BATCH)
            touched: set[Conn] = set()  # with many MMEs, most have nothing due this turn
            while m < batch_end:
                offset = int(k * _NS / rate)
                if offset > rel:
                    break
                conn = conns[r]
                measured = k >= warm_slots
                if conn is not None and conn.send(start + offset, measured):
                    touched.add(conn)
                    if measured:
                        record_lag((rel - offset) // 1000)
                m += 1
                k += 1
                r += 1
                if r == own:
                    r = 0
                    k += skip
            for c in touched:
                c.flush()
            if now >= next_sweep:
                for c in self.live:
                    c.expire(now, self._timeout_ns)
                next_sweep = now + _SWEEP_NS
                if not self.live:
                    break
            if m >= limit:
                break
            wait = start + sched.offset_ns(k) - time.monotonic_ns()
            if wait > _SPIN_NS:
                await asyncio.sleep(min(wait - _WAKE_EARLY_NS, _SWEEP_NS) / 1e9)
            else:
                if nap:
                    time.sleep(nap)  # blocks the loop: answers are read when it ends
                await asyncio.sleep(0)
        if stop.is_set():
            stats.measure_end_ns = min(stats.measure_end_ns, max(stats.measure_start_ns, time.monotonic_ns()))

    async def _drain(self) -> None:
        """Wait for the outstanding answers, at most --timeout; what is left times out."""
        self.phase = "draining"
        deadline = time.monotonic_ns() + self._timeout_ns + 100_000_000
        conns = [c for c in self.conns if c is not None]
        while any(c.pending for c in conns) and time.monotonic_ns() < deadline:
            await asyncio.sleep(0.01)
            now = time.monotonic_ns()
            for c in conns:
                c.expire(now, self._timeout_ns)
        for c in conns:
            c.expire(deadline + self._timeout_ns, self._timeout_ns)  # whatever is still pending

    async def close(self) -> None:
        """DPR on every connection, each waiting for its DPA (bounded); --sbi: GOAWAY."""
        self.phase = "closing"
        conns = [c for c in self.conns if c is not None]
        results: Sequence[bool] = await asyncio.gather(
            *(c.disconnect(min(self.params.timeout, _DPA_WAIT_S)) for c in conns)
        )
        for c, ok in zip(conns, results, strict=True):
            if not ok:
                self.stats.error("dpa_timeout", detail=f"{c.origin_host}: no DPA")
        self.phase = "done"
