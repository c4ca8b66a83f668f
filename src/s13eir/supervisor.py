"""``serve --workers N``: N worker processes sharing the listening ports.

Each worker is a full node (its own event loop, lists and Bloom filter) bound with
SO_REUSEPORT, so the kernel spreads new connections over the workers; Diameter
peers keep long-lived connections, so the spread is per connection. The
supervisor restarts a worker that dies (with a growing delay if it keeps dying),
forwards SIGHUP (list reload) to every worker, and on SIGTERM/SIGINT stops them
all, each sending DPR to its peers.

Worker i serves metrics on ``metrics.port + i``. Before any worker exists, while
the supervisor parses the list files at start (about a minute for ten million
IMEIs), the supervisor answers on ``metrics.port`` itself, as a node does while it
loads: ``/healthz`` 200, ``/readyz`` 503 ``loading: ...``, ``/metrics`` with its
process metrics. It closes that port just before it starts worker 0, which opens
it again first thing (the gap is the worker's interpreter start, about a second);
a worker maps the parsed file rather than parsing, so its own loading phase is short.

With the embedded store, the supervisor parses the list files once and writes
the snapshot to a file that every worker maps (``lists.mmap_snapshot``): the IMEI
arrays are then held once in the page cache rather than once per worker. On
SIGHUP it re-parses the files and, only if they are valid, replaces the file and
tells the workers to map the new one; a bad file leaves every worker's lists as
they were.

Workers never outlive their supervisor: each gets the read end of a pipe whose only
write end the supervisor holds (``--parent-fd``). When the supervisor dies, even by
SIGKILL, the kernel closes it; every worker sees end-of-file, stops as on SIGTERM
(DPR to its peers) and removes the shared snapshot's directory. A supervisor that
starts removes such directories left by supervisors that are gone (their pid is in
the name), so ``/dev/shm`` does not fill up with crashes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from .config import Config
from .lists.formats import ListFormatError
from .lists.loading import in_thread
from .lists.mmap_snapshot import save_snapshot
from .lists.progress import LoadProgress
from .observability.http import start_http
from .observability.logs import get_logger
from .observability.metrics import Metrics

MAX_BACKOFF_S = 30.0
SHARED_PREFIX = "s13eir-"  # + the supervisor's pid + "-": the shared snapshot's directory
HEALTHY_AFTER_S = 10.0  # a worker that lived this long resets its restart delay


def remove_orphans(base: str, log: Any) -> None:
    """Remove shared-snapshot directories under ``base`` whose supervisor is gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(SHARED_PREFIX):
            continue
        pid_text = name[len(SHARED_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        log.warning("shared_lists_orphan_removed", path=os.path.join(base, name), pid=int(pid_text))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    def __init__(self, config: Config, config_path: str, workers: int, extra_args: Sequence[str] = ()) -> None:
        self.config = config
        self.config_path = config_path
        self.shared_path: str | None = None
        self._counts: dict[str, int] | None = None  # the lists in force, for the reload guards
        self.workers = workers
        self.extra_args = list(extra_args)
        self.log = get_logger("s13eir.supervisor")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lifeline: tuple[int, int] | None = None  # (read, write): see the module docstring
        self.started: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.stopping = False

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "s13eir.cli", "serve", "--config", self.config_path,
               "--worker-index", str(index), "--reuse-port", *self.extra_args]  # fmt: skip
        if self.shared_path is not None:
            cmd += ["--shared-lists", self.shared_path]
        if self._lifeline is None:
            self._lifeline = os.pipe()  # both ends close-on-exec: only the read end is passed on
        cmd += ["--parent-fd", str(self._lifeline[0])]
        self.procs[index] = subprocess.Popen(cmd, pass_fds=(self._lifeline[0],))
        self.started[index] = time.monotonic()
        self.log.info("worker_started", worker=index, pid=self.procs[index].pid)

    def _signal(self, sig: int) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    def run(self) -> int:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.stopping = True
            self._signal(signum)

        def on_hup(signum: int, _frame: FrameType | None) -> None:
            # SIGUSR1: the same reload, with sync.guards overridden (the operator's --force).
            if self.shared_path is None or self._write_lists(force=signum == signal.SIGUSR1):
                self._signal(signal.SIGHUP)

        if self.config.store.backend == "embedded":
            base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
            remove_orphans(base, self.log)
            directory = tempfile.mkdtemp(prefix=f"{SHARED_PREFIX}{os.getpid()}-", dir=base)
            self.shared_path = os.path.join(directory, "lists.snap")
        try:
            if self.shared_path is not None and not self._first_load():
                return 2
            return self._supervise(on_stop, on_hup)
        finally:
            if self.shared_path is not None:
                shutil.rmtree(os.path.dirname(self.shared_path), ignore_errors=True)

    def _first_load(self) -> bool:
        """The first parse of the list files, with the health endpoints answering on
        ``metrics.port`` meanwhile (see the module docstring)."""
        if not self.config.metrics.enabled:
            return self._write_lists()
        return asyncio.run(self._load_serving_health())

    async def _load_serving_health(self) -> bool:
        progress = LoadProgress()
        cfg = self.config.metrics
        http = await start_http(cfg.address, cfg.port, Metrics(), lambda: (False, f"loading: {progress.describe()}"))
        self.log.info("lists_loading", store="embedded", files=len(self.config.store.lists), port=cfg.port)
        try:
            return await in_thread(lambda: self._write_lists(progress), "s13eir-lists")
        finally:
            # Closed before worker 0 starts, which listens on this port.
            http.close()
            await http.wait_closed()

    def _write_lists(self, progress: LoadProgress | None = None, force: bool = False) -> bool:
        from .lists.configured import load_snapshot
        from .lists.reload_guard import reload_refusals

        assert self.shared_path is not None
        try:
            snapshot = load_snapshot(self.config, progress)
        except (ListFormatError, OSError) as exc:
            self.log.error("lists_reload_failed", error=str(exc))
            return False
        if self._counts is not None:
            refusals = reload_refusals(self._counts, snapshot.counts(), self.config.sync.guards)
            if refusals and not force:
                self.log.error(
                    "lists_reload_refused",
                    refused=refusals,
                    kept=self._counts,
                    offered=snapshot.counts(),
                    override="send SIGUSR1 to load these files anyway",
                )
                return False
            if refusals:
                self.log.warning("lists_reload_forced", overridden=refusals)
        self._counts = snapshot.counts()
        if progress is not None:
            progress.set_phase("writing the shared list snapshot")
        save_snapshot(snapshot, self.shared_path)
        self.log.info("lists_shared", path=self.shared_path, **snapshot.counts(), memory_bytes=snapshot.memory_bytes())
        return True

    def _supervise(self, on_stop: Callable[[int, FrameType | None], None],
                   on_hup: Callable[[int, FrameType | None], None]) -> int:  # fmt: skip
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_hup)
        for i in range(self.workers):
            self._spawn(i)
        restart_at: dict[int, float] = {}
        while True:
            if self.stopping:
                deadline = time.monotonic() + 15
                for p in self.procs.values():
                    try:
                        p.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        p.kill()
                self.log.info("stopped", workers=self.workers)
                return 0
            now = time.monotonic()
            for i, p in list(self.procs.items()):
                if p.poll() is None or i in restart_at:
                    continue
                lived = now - self.started[i]
                delay = 0.5 if lived > HEALTHY_AFTER_S else min(MAX_BACKOFF_S, self.backoff.get(i, 0.25) * 2)
                self.backoff[i] = delay
                restart_at[i] = now + delay
                self.log.error("worker_died", worker=i, pid=p.pid, returncode=p.returncode, restart_in_s=delay)
            for i, at in list(restart_at.items()):
                if now >= at and not self.stopping:
                    del restart_at[i]
                    self._spawn(i)
            time.sleep(0.1)
