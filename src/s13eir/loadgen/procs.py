"""Running the MMEs in this process, or spread over ``--procs`` worker processes.

Workers are started with the ``spawn`` method (a fresh interpreter: nothing of the
parent's event loop, sockets or threads is inherited) and talk to the parent over one
duplex pipe each: ``ready`` once their MMEs are connected, ``progress`` every half
second, ``done`` with their final counters. The parent waits until every worker is
ready, then gives all of them the same start time on CLOCK_MONOTONIC (system-wide on
Linux), so warm-up and measurement windows line up across processes, and merges the
histograms and counters at the end. Every wait is bounded; a worker that does not
finish in time is terminated (by its Process handle) and counted as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .client import LoadParams, ProcessRun, Share, build_traffic, split_mmes
from .driver import Traffic
from .imeis import Workload
from .stats import Stats

__all__ = ["Progress", "new_event_loop", "run_load"]

Progress = Callable[[Stats, str], None]  # (counters so far, phase), called ~2/s

_PROGRESS_S = 0.5
_START_MARGIN_NS = 50_000_000  # workers get the start time this far ahead
_SPAWN_GRACE_S = 60.0  # a fresh interpreter importing s13eir, plus connecting


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (about twice the packets per core), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def run_load(
    params: LoadParams,
    workload: Workload,
    *,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> Stats:
    """Run the whole load test and return the merged counters."""
    stop = stop or asyncio.Event()
    epoch = int(time.time())
    shares = split_mmes(params.mmes, params.procs)
    if len(shares) == 1:
        return await _run_here(params, build_traffic(workload, params.sbi), shares[0], epoch, stop, progress)
    return await _run_workers(params, workload, shares, epoch, stop, progress)


async def _run_here(
    params: LoadParams, traffic: Traffic, share: Share, epoch: int, stop: asyncio.Event, progress: Progress | None
) -> Stats:
    run = ProcessRun(params, traffic, share, epoch)
    reporter = asyncio.create_task(_report(run, progress)) if progress else None
    try:
        if await run.connect():
            await run.run(time.monotonic_ns(), stop)
        await run.close()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    return run.stats


async def _report(run: ProcessRun, progress: Progress) -> None:
    while True:
        progress(run.stats, run.phase)
        await asyncio.sleep(_PROGRESS_S)


# -- workers ----------------------------------------------------------------------------


def _worker(params: LoadParams, workload: Workload, share: Share, epoch: int, conn: Connection) -> None:
    """A worker process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which says "stop"
    traffic = build_traffic(workload, params.sbi)
    gc.freeze()  # the long-lived workload leaves the collector's sight: no full-heap pauses mid-run
    loop = new_event_loop()
    try:
        loop.run_until_complete(_worker_main(params, traffic, share, epoch, conn))
    finally:
        loop.close()
        conn.close()


async def _worker_main(params: LoadParams, traffic: Traffic, share: Share, epoch: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    run = ProcessRun(params, traffic, share, epoch)
    stop = asyncio.Event()
    start: asyncio.Future[int] = loop.create_future()

    def on_message() -> None:
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "start" and not start.done():
                    start.set_result(int(msg[1]))
                elif msg[0] == "stop":
                    stop.set()
                    if not start.done():
                        start.set_result(0)
        except (EOFError, OSError):  # the parent is gone: stop as if told to
            stop.set()
            if not start.done():
                start.set_result(0)
            loop.remove_reader(conn.fileno())

    loop.add_reader(conn.fileno(), on_message)
    up = await run.connect()
    with contextlib.suppress(OSError):
        conn.send(("ready", up))
    try:
        start_ns = await asyncio.wait_for(start, _SPAWN_GRACE_S + params.timeout)
    except TimeoutError:
        start_ns = 0
    if up and start_ns and not stop.is_set():
        ticker = asyncio.create_task(_send_progress(run, conn))
        try:
            await run.run(start_ns, stop)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker  # a ticker that failed fails the worker, visibly
    await run.close()
    loop.remove_reader(conn.fileno())
    with contextlib.suppress(OSError):  # the parent is gone: nobody to report to
        conn.send(("done", run.stats))


async def _send_progress(run: ProcessRun, conn: Connection) -> None:
    while True:
        await asyncio.sleep(_PROGRESS_S)
        with contextlib.suppress(OSError):
            conn.send(("progress", run.stats, run.phase))


async def _run_workers(
    params: LoadParams,
    workload: Workload,
    shares: list[Share],
    epoch: int,
    stop: asyncio.Event,
    progress: Progress | None,
) -> Stats:
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    n = len(shares)
    latest: list[Stats] = [Stats() for _ in shares]
    phases = ["starting"] * n
    final: list[Stats | None] = [None] * n
    ready = [False] * n
    changed = asyncio.Event()
    procs: list[Any] = []
    pipes: list[Connection] = []

    def reader(i: int, conn: Connection) -> Callable[[], None]:
        def on_message() -> None:
            try:
                while conn.poll():
                    msg = conn.recv()
                    if msg[0] == "ready":
                        ready[i] = True
                    elif msg[0] == "progress":
                        latest[i], phases[i] = msg[1], msg[2]
                    elif msg[0] == "done":
                        final[i] = latest[i] = msg[1]
                        phases[i] = "done"
            except (EOFError, OSError):  # the worker died: counted below
                loop.remove_reader(conn.fileno())
                phases[i] = "dead"
            changed.set()

        return on_message

    for i, share in enumerate(shares):
        parent_end, child_end = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker, args=(params, workload, share, epoch, child_end), daemon=True)
        proc.start()
        child_end.close()
        loop.add_reader(parent_end.fileno(), reader(i, parent_end))
        procs.append(proc)
        pipes.append(parent_end)

    def settled(what: list[bool]) -> bool:
        return all(ok or phases[i] == "dead" for i, ok in enumerate(what))

    async def wait_until(cond: Callable[[], bool], deadline: float) -> bool:
        while not cond():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, _PROGRESS_S))
            if progress is not None:
                progress(_merged(latest), _phase(phases))
        return True

    def send_all(msg: tuple[Any, ...]) -> None:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(msg)

    stop_sent = False
    try:
        await wait_until(lambda: settled(ready) or stop.is_set(), loop.time() + _SPAWN_GRACE_S + params.timeout)
        if stop.is_set():
            send_all(("stop",))
            stop_sent = True
        else:
            send_all(("start", time.monotonic_ns() + _START_MARGIN_NS))
        deadline = loop.time() + params.warmup + params.duration + 3 * params.timeout + _SPAWN_GRACE_S

        def finished() -> bool:
            nonlocal stop_sent
            if stop.is_set() and not stop_sent:
                send_all(("stop",))
                stop_sent = True
            return settled([f is not None for f in final])

        await wait_until(finished, deadline)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(pipe.fileno())
        for proc in procs:
            await loop.run_in_executor(None, proc.join, 5.0)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5.0)
        for pipe in pipes:
            pipe.close()
    total = _merged([f for f in final if f is not None])
    for i, f in enumerate(final):
        if f is None:
            total.error("worker_failed", detail=f"worker {i + 1} (MMEs {shares[i].first + 1}..) did not report")
            total.merge(latest[i])  # what it had reported so far
    return total


def _merged(parts: list[Stats]) -> Stats:
    total = Stats()
    for part in parts:
        total.merge(part)
    return total


def _phase(phases: list[str]) -> str:
    order = ["dead", "starting", "connecting", "warmup", "measuring", "draining", "closing", "done"]
    live = [p for p in phases if p != "dead"] or ["done"]
    return min(live, key=order.index)
