"""Supervision of the long-lived tasks of one process (a node, ``s13eir sync``).

Every background task whose failure matters starts here, never with a bare
``create_task`` (``tests/test_supervision.py`` enforces it): the change follower,
Bloom rebuilds and confirmations, the sighting publisher, NRF heartbeats, the MQTT
feed and the statistics loop of ``s13eir sync``, the writer lock's renewal.

* :meth:`Supervisor.start`: a long-lived task, given as a factory so that it can be
  started again. When it raises, the traceback is logged once (``task_failed``,
  with the exception, JSON in production), the failure is counted
  (``s13eir_task_failures_total{task}``) and the task is started again after a
  backoff (doubling up to ``backoff_max_s``; reset once it ran ``stable_after_s``).
  While a *critical* task is down, and for ``settle_s`` after its restart,
  :meth:`down` names it, and ``/readyz`` with it. A task that returns is done.
  Exceptions listed in ``stop_on`` end it without a restart and reach whoever
  awaits the returned task (``WriterLockLost``: the process must stop writing).
* :meth:`spawn`: one-shot work (a confirmation batch, a rebuild, a reload asked for
  by a signal). A reference is kept until it ends, and an error is logged and
  counted the same way; it is not restarted.

The supervisor owns no event loop and no thread: it is a few dicts and the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .observability.logs import get_logger

__all__ = ["Supervisor"]

T = TypeVar("T")


class Supervisor:
    def __init__(
        self,
        *,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        settle_s: float = 1.0,
        logger: str = "s13eir.supervision",
    ) -> None:
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.settle_s = settle_s
        self.failures: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._critical: set[str] = set()
        self._down: dict[str, tuple[str, float | None]] = {}  # name -> (error, restarted at | None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = get_logger(logger)

    # -- starting -----------------------------------------------------------------------

    def start(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        critical: bool = True,
        stop_on: tuple[type[BaseException], ...] = (),
    ) -> asyncio.Task[None]:
        """Run ``run()`` under supervision; returns the supervising task (cancel it to stop)."""
        self.failures.setdefault(name, 0)
        if critical:
            self._critical.add(name)
        return self._keep(asyncio.get_running_loop().create_task(self._supervise(name, run, stop_on), name=name))

    def spawn(self, name: str, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run one-shot ``work``; its error, if any, is logged and counted."""
        self.failures.setdefault(name, 0)
        task = self._keep(asyncio.get_running_loop().create_task(work, name=name))
        task.add_done_callback(lambda t: self._collect(name, t))
        return task

    def _keep(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _collect(self, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures[name] = self.failures.get(name, 0) + 1
            self._log.error("task_failed", task=name, failures=self.failures[name], restart=False, exc_info=exc)

    async def _supervise(
        self, name: str, run: Callable[[], Awaitable[None]], stop_on: tuple[type[BaseException], ...]
    ) -> None:
        delay = self.backoff_min_s
        while True:
            started = time.monotonic()
            try:
                await run()
                self._down.pop(name, None)
                return
            except asyncio.CancelledError:
                raise
            except stop_on:
                self._down.pop(name, None)
                raise
            except Exception as exc:
                self.failures[name] = self.failures.get(name, 0) + 1
                if time.monotonic() - started >= self.stable_after_s:
                    delay = self.backoff_min_s
                if name in self._critical:
                    self._down[name] = (f"{type(exc).__name__}: {exc}", None)
                self._log.error("task_failed", task=name, failures=self.failures[name], restart_in_s=round(delay, 3),
                                exc_info=exc)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if name in self._down:
                self._down[name] = (self._down[name][0], time.monotonic())
            self._log.warning("task_restarted", task=name, restarts=self.restarts[name])

    # -- reporting -------------------------------------------------------------------------

    def down(self) -> dict[str, str]:
        """Critical tasks that crashed and are waiting for their restart, or restarted
        less than ``settle_s`` ago: name -> the error."""
        now = time.monotonic()
        out: dict[str, str] = {}
        for name, (error, restarted) in list(self._down.items()):
            if restarted is not None and now - restarted >= self.settle_s:
                del self._down[name]
                continue
            out[name] = error
        return out

    def describe_down(self) -> str:
        """For ``/readyz``: ``task down: change-follower (ValueError: ...), restarting``."""
        down = self.down()
        if not down:
            return ""
        return "task down: " + ", ".join(f"{n} ({e})" for n, e in sorted(down.items())) + ", restarting"

    def metrics(self) -> Iterable[Metric]:
        failures = CounterMetricFamily(
            "s13eir_task_failures", "Crashes of supervised background tasks (each one logged).", labels=["task"]
        )
        for name, n in sorted(self.failures.items()):
            failures.add_metric([name], n)
        yield failures
        down = self.down()
        up = GaugeMetricFamily("s13eir_task_down", "1 while a critical background task is down.", labels=["task"])
        for name in sorted(self._critical):
            up.add_metric([name], 1 if name in down else 0)
        yield up

    # -- stopping --------------------------------------------------------------------------

    async def stop(self, timeout: float = 3.0) -> None:
        """Cancel every task but the caller's own and wait for them (bounded)."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for t in tasks:
            if t.done() and not t.cancelled():
                with contextlib.suppress(BaseException):
                    t.exception()  # retrieved: an error at shutdown is not news
