"""Loading lists off the event loop, with progress the health endpoints can show.

Parsing ten million IMEIs takes about a minute of CPU. On the event loop that
would leave the metrics/health server unable to answer, and an orchestrator's
liveness probe would restart the node before it ever finished loading. So the
node (and the ``serve --workers`` supervisor) parse in a thread while the loop
serves ``/healthz``, ``/readyz`` and ``/metrics``:

* :func:`in_thread` runs the load in a daemon thread and hands its result to the
  loop through a future. The thread builds a new snapshot that nothing else can
  see; once the future resolves the thread has finished with it and never touches
  it again, so the loop takes over an object no other thread uses (the same hand
  over as a reload, which builds in an executor and then swaps one reference).
* :class:`~s13eir.lists.progress.LoadProgress` is what ``/readyz`` says meanwhile. The loading thread
  writes a few plain attributes; the loop only reads them to describe the load.

The thread shares the interpreter lock with the loop, and by default a thread
that wants the lock back waits up to 5 ms for it (``sys.getswitchinterval()``).
The loop gives the lock up at every system call it makes, so each of the many
steps of one HTTP exchange paid that wait: measured with two million IMEIs, a
``/healthz`` took up to 2 s while the files were parsed. While a load runs,
:func:`in_thread` therefore shortens the switch interval to
:data:`LOAD_SWITCH_INTERVAL_S` (0.5 ms: the same ``/healthz`` then took under
0.1 s, and the load no longer than before), and restores it afterwards. The
index build works in chunks for the same reason (see ``SnapshotBuilder.build``):
one long C call would keep the lock however short the interval. What remains
uninterrupted is the sort of one bucket of IMEIs (2**34 consecutive IMEI keys):
measured, about 0.7 s per million IMEIs of one bucket when the file is not in IMEI
order, a tenth of that when it is; real lists spread over many buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LOAD_SWITCH_INTERVAL_S", "in_thread"]

_T = TypeVar("_T")

LOAD_SWITCH_INTERVAL_S = 0.0005
# Loads in progress (in_thread calls awaiting), and the interval to restore after the last.
_loads = 0
_saved_interval = 0.0


async def in_thread(fn: Callable[[], _T], name: str) -> _T:
    """``fn()`` in a new daemon thread, awaited on the running loop.

    A daemon thread rather than ``asyncio.to_thread``: the default executor is
    joined when the loop shuts down, so a node interrupted in the middle of a long
    load would wait for it to finish before exiting. Until it has finished, the
    interpreter's switch interval is :data:`LOAD_SWITCH_INTERVAL_S` (module docstring).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()

    def ok(result: _T) -> None:
        if not fut.done():  # else cancelled meanwhile
            fut.set_result(result)

    def failed(exc: BaseException) -> None:
        if not fut.done():
            fut.set_exception(exc)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(failed, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(ok, result)

    global _loads, _saved_interval
    if _loads == 0:
        _saved_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(_saved_interval, LOAD_SWITCH_INTERVAL_S))
    _loads += 1
    try:
        threading.Thread(target=run, name=name, daemon=True).start()
        return await fut
    finally:
        _loads -= 1
        if _loads == 0:
            sys.setswitchinterval(_saved_interval)
