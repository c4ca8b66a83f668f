"""``s13eir sync --config PATH``: the long-running process that keeps the lists in Redis
in step with the master list.

1. Connect to ``store.redis`` and take the writer lock. Another sync process holding
   it: log ``waiting for the writer lock held by <holder>`` and wait (it expires at
   most ``sync.lock_ttl_s`` after its holder died). Exactly one process writes and
   consumes the feed; the others are hot standbys.
2. On a Redis Cluster, re-apply the change stream's tail (a writer that died between
   logging and applying a slice; single server and Sentinel apply atomically).
3. Snapshots at start (``sync.snapshots``), per list:

   * the list has no current generation: import it;
   * otherwise, when the file's SHA-256 differs from the one recorded at its last
     import by this process (``P:sync:snapshots``): import it, with the guards, *only
     if no MQTT feed is configured*. With a feed, the list in Redis is a snapshot plus
     the changes applied since, and a snapshot of unknown age could undo some of them
     for good; the changed file is used at the next resync instead (or by an operator,
     ``s13eir lists import``), and a line says so;
   * unchanged: nothing (re-importing would undo the changes applied since).

   An import that fails at start (bad file) stops the process (exit 1); one the guards
   refuse leaves the list as it is (logged).
4. Run the MQTT feed (:class:`~s13eir.sync.mqtt_feed.MqttFeed`) until SIGTERM/SIGINT.
   Its resync re-imports every snapshot *with the guards*: a snapshot they refuse
   (older than the feed, truncated, wrong) stalls the feed with the lists in force
   kept, until the file or the list changes or an operator sends SIGUSR1 (the next
   resync overrides the guards once). Counters (``applied``, ``duplicates``, ``gaps``,
   ``rejected``, ``resyncs``, ...) are logged every ``stats_interval_s`` and at exit.
5. Lock lost (expired during a long stall, or taken over): stop writing at once and
   exit 1, so that the process that now holds it is the only writer and the only
   consumer of the persistent MQTT session.

Exit codes: 0 stopped by a signal; 1 lock lost or a failure; 2 configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Iterable
from typing import Any, Final, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from s13eir.backends.mqtt_url import parse_mqtt_url
from s13eir.backends.redis_client import AnyRedis, as_text, connect
from s13eir.config import Config, ConfigError, SnapshotSourceConfig
from s13eir.config_loading import load_config
from s13eir.lists.formats import ListFormatError, ListSpec
from s13eir.lists.redis_layout import k_current
from s13eir.observability.http import start_http
from s13eir.observability.logs import configure_logging, get_logger
from s13eir.observability.metrics import SourceMetrics
from s13eir.observability.redact import redact_url

from ..supervision import Supervisor
from .detection_actions import DetectionActions
from .import_report import ImportReport
from .lock import WriterError, WriterLock, WriterLockHeld, WriterLockLost, writer_lock
from .mqtt_feed import TRANSIENT_REDIS_ERRORS, MqttFeed, ResyncRefused
from .writer import ListWriter

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "SyncProcess",
    "add_sync_parser",
    "cmd_sync",
    "file_sha256",
    "k_sync_snapshots",
    "run_sync",
]

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
DEFAULT_CONFIG: Final = "config/eir.yaml"
WRITER_TIMEOUT_S: Final = 120.0  # one script may carry thousands of rows


def k_sync_snapshots(p: str) -> str:
    """Hash: list -> JSON ``{"path", "sha256", "generation", "imported"}`` of the snapshot
    this process last imported into it (to tell at start whether the file changed)."""
    return f"{p}:sync:snapshots"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class SyncProcess:
    """One run of the sync process; :meth:`run` returns the exit code."""

    def __init__(
        self,
        config: Config,
        *,
        stop: asyncio.Event | None = None,
        redis: AnyRedis | None = None,
        stats_interval_s: float = 60.0,
        lock_poll_s: float = 0.5,
        feed_backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.config = config
        self.prefix = config.store.redis.prefix
        self.stop = stop if stop is not None else asyncio.Event()
        self.redis = redis if redis is not None else connect(config.store.redis, timeout_s=WRITER_TIMEOUT_S)
        self._own_redis = redis is None
        self.stats_interval_s = stats_interval_s
        self.lock_poll_s = lock_poll_s
        self.feed_backoff_s = feed_backoff_s
        self.feed: MqttFeed | None = None
        self.actions: DetectionActions | None = None
        self.writer: ListWriter | None = None
        self.lock: WriterLock | None = None
        self.resyncs = 0
        self._force_next = False
        self._refused: dict[str, tuple[int, int, str]] = {}
        self.role = "starting"  # starting | standby | writer | stopped
        self.holder = ""  # the writer lock's holder while on standby
        self.redis_error = ""  # the last Redis failure, "" once Redis answers again
        self.http_port: int | None = None
        self.supervisor = Supervisor()
        self.log = get_logger("s13eir.sync")

    # -- snapshots ---------------------------------------------------------------------------

    async def _record(self, snap: SnapshotSourceConfig, sha: str, report: ImportReport) -> None:
        generation = report.generation if report.applied else report.previous  # "unchanged": the current one
        value = json.dumps({"path": snap.path, "sha256": sha, "generation": generation,
                            "imported": int(time.time())})  # fmt: skip
        await self.redis.hset(k_sync_snapshots(self.prefix), snap.list, value)

    async def _import(self, snap: SnapshotSourceConfig, *, force: bool, why: str) -> ImportReport:
        assert self.writer is not None
        sha = await asyncio.to_thread(file_sha256, snap.path)
        self.log.info("snapshot_import", list=snap.list, path=snap.path, why=why, force=force)
        report = await self.writer.import_snapshot(
            ListSpec(snap.path, snap.format, None), snap.list, force=force, guards=self.config.sync.guards
        )
        level = self.log.error if report.status == "refused" else self.log.info
        level("snapshot_imported", list=snap.list, path=snap.path, status=report.status, count=report.count,
              adds=report.adds, removals=report.removals, generation=report.generation, seq=report.seq,
              seconds=round(report.seconds, 3), guards=[str(v) for v in report.verdicts])  # fmt: skip
        if report.status != "refused":
            await self._record(snap, sha, report)
        return report

    async def import_at_start(self) -> None:
        """Step 3 of the module docstring."""
        has_feed = self.config.sync.mqtt is not None
        for snap in self.config.sync.snapshots:
            current = await self.redis.hget(k_current(self.prefix), snap.list)
            if current is None:
                await self._import(snap, force=False, why="the list has no current generation")
                continue
            sha = await asyncio.to_thread(file_sha256, snap.path)
            raw = as_text(await self.redis.hget(k_sync_snapshots(self.prefix), snap.list))
            last: dict[str, Any] = json.loads(raw) if raw else {}
            if last.get("sha256") == sha and last.get("path") == snap.path:
                self.log.info("snapshot_unchanged", list=snap.list, path=snap.path, generation=int(current))
            elif has_feed:
                self.log.warning("snapshot_changed_not_imported", list=snap.list, path=snap.path,
                                 reason="the feed's changes since the last import could be undone",
                                 hint="used at the next resync, or run s13eir lists import")  # fmt: skip
            else:
                await self._import(snap, force=False, why="the file changed since its last import")

    async def resync(self) -> None:
        """The feed's gap repair: every snapshot again, with the guards (raises
        ResyncRefused when they refuse one). The guards are overridden only once an
        operator asked (SIGUSR1: :meth:`force_resync`). A snapshot refused before is
        not imported again until its file or its list changed (or the operator forces)."""
        self.resyncs += 1
        if not self.config.sync.snapshots:
            self.log.error("resync_without_snapshots", hint="configure sync.snapshots; changes in the gap are lost")
            return
        force, self._force_next = self._force_next, False
        refused: list[str] = []
        details: list[str] = []
        for snap in self.config.sync.snapshots:
            mark = await self._snapshot_mark(snap)
            if not force and self._refused.get(snap.list) == mark:
                refused.append(snap.list)
                details.append(f"{snap.list}: unchanged since refused")
                continue
            why = "resync after a gap in the feed" + (", forced by the operator" if force else "")
            report = await self._import(snap, force=force, why=why)
            if report.status == "refused":
                self._refused[snap.list] = await self._snapshot_mark(snap)  # the list as it stays
                refused.append(snap.list)
                details.append("; ".join(str(v) for v in report.verdicts if not v.ok))
            else:
                self._refused.pop(snap.list, None)
        if refused:
            raise ResyncRefused(refused, " | ".join(details))

    async def _snapshot_mark(self, snap: SnapshotSourceConfig) -> tuple[int, int, str]:
        """What a refused snapshot is retried on: its file's mtime and size, the list's
        current generation (a rollback or an import while ``s13eir sync`` was stopped changes it)."""
        try:
            st = os.stat(snap.path)
            mtime, size = st.st_mtime_ns, st.st_size
        except OSError:
            mtime, size = -1, -1
        return mtime, size, as_text(await self.redis.hget(k_current(self.prefix), snap.list))

    def force_resync(self) -> None:
        """The operator's decision (SIGUSR1): the next resync overrides the guards."""
        self._force_next = True
        self.log.warning("resync_forced_by_operator", stalled=self.feed.stalled if self.feed else "")
        if self.feed is not None:
            self.feed.retry_resync.set()

    # -- health ------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for ``/readyz``: not while the feed is stalled (a resync the
        guards refused), Redis is away or the process stops. A standby waiting for the
        lock is ready: it is doing its job."""
        if self.role == "stopped" or self.stop.is_set():
            return False, "stopping"
        if self.feed is not None and self.feed.stalled:
            return False, f"feed stalled: {self.feed.stalled}"
        down = self.supervisor.describe_down()
        if down:
            return False, down
        if self.redis_error:
            return False, f"Redis unavailable: {self.redis_error}"
        if self.role == "standby":
            return True, f"standby: waiting for the writer lock held by {self.holder}"
        if self.role == "writer" and self.feed is not None and not self.feed.subscribed.is_set():
            return True, "writer: broker unavailable (the broker keeps the feed's messages)"
        return True, self.role

    def _metrics(self) -> Iterable[Metric]:
        yield from self.supervisor.metrics()
        roles = GaugeMetricFamily("s13eir_sync_role", "1 for this process's role.", labels=["role"])
        for role in ("starting", "standby", "writer", "stopped"):
            roles.add_metric([role], 1 if role == self.role else 0)
        yield roles
        yield CounterMetricFamily("s13eir_sync_resyncs", "Resyncs started (gaps in the feed).", value=self.resyncs)
        feed = self.feed
        if feed is None:
            return
        st = feed.stats
        stalled = int(bool(feed.stalled))
        yield GaugeMetricFamily("s13eir_sync_feed_stalled", "1 while a refused resync holds the feed.", value=stalled)
        yield GaugeMetricFamily("s13eir_sync_feed_connected", "1 while subscribed to the broker.",
                                value=int(feed.subscribed.is_set()))  # fmt: skip
        yield GaugeMetricFamily("s13eir_sync_feed_seq", "Seq of the last change set applied.", value=st.last_seq or 0)
        messages = CounterMetricFamily("s13eir_sync_feed_messages", "Feed messages, by outcome.", labels=["outcome"])
        for outcome, n in (("applied", st.applied), ("duplicate", st.duplicates), ("gap", st.gaps),
                           ("rejected", st.rejected), ("implausible", st.implausible)):  # fmt: skip
            messages.add_metric([outcome], n)
        yield messages
        yield CounterMetricFamily("s13eir_sync_feed_changes", "Changes applied from the feed.", value=st.changes)
        yield CounterMetricFamily("s13eir_sync_resync_refusals", "Resyncs refused.", value=st.resync_refusals)
        yield CounterMetricFamily("s13eir_sync_resync_failures", "Resyncs that failed.", value=st.resync_failures)

    async def _start_http(self) -> asyncio.Server | None:
        m = self.config.sync.metrics
        if not m.enabled:
            return None
        server = await start_http(m.address, m.port, SourceMetrics(self._metrics), self.ready)
        self.http_port = int(server.sockets[0].getsockname()[1])
        self.log.info("sync_http", url=f"http://{m.address}:{self.http_port}", paths="/healthz /readyz /metrics")
        return server

    # -- running -----------------------------------------------------------------------------

    def _stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resync_calls": self.resyncs}
        if self.feed is not None:
            out.update(self.feed.stats.as_dict())
        return out

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            self.log.info("sync_stats", **self._stats())

    async def _watch_lock(self, lock: WriterLock) -> None:
        while not lock.lost:
            await asyncio.sleep(min(0.2, self.config.sync.lock_ttl_s / 10))

    async def run(self) -> int:
        server: asyncio.Server | None = None
        try:
            if self.config.sync.mqtt is not None:
                parse_mqtt_url(self.config.sync.mqtt.url)  # a bad url stops the start, not the feed later
            try:
                server = await self._start_http()
            except OSError as exc:
                m = self.config.sync.metrics
                self.log.error("sync_http_failed", address=m.address, port=m.port, error=str(exc))
                return EXIT_CONFIG
            return await self._run()
        except ValueError as exc:  # a url the clients cannot use
            self.log.error("sync_config_error", error=str(exc))
            return EXIT_CONFIG
        except Exception as exc:
            self.log.exception("sync_failed", error=str(exc) or repr(exc))
            return EXIT_FAILURE
        finally:
            self.role = "stopped"
            if server is not None:
                server.close()
            if self._own_redis:
                with contextlib.suppress(Exception):
                    await self.redis.aclose()

    async def _run(self) -> int:
        cfg = self.config
        mqtt = None if cfg.sync.mqtt is None else f"{redact_url(cfg.sync.mqtt.url)} {cfg.sync.mqtt.topic}"
        self.log.info("sync_starting", redis=redact_url(cfg.store.redis.url), prefix=self.prefix,
                      snapshots=[f"{s.list}:{s.path}" for s in cfg.sync.snapshots], mqtt=mqtt)  # fmt: skip
        logged_holder = ""
        delay = self.lock_poll_s
        while not self.stop.is_set():
            try:
                async with writer_lock(
                    self.redis, self.prefix, cfg.sync.lock_ttl_s, wait=False, supervisor=self.supervisor
                ) as lock:
                    return await self._serve(lock)
            except WriterLockHeld as exc:
                self.role, self.holder, self.redis_error = "standby", exc.holder, ""
                if exc.holder != logged_holder:
                    logged_holder = exc.holder
                    self.log.info(f"waiting for the writer lock held by {exc.holder}", holder=exc.holder,
                                  expires_in_ms=exc.ttl_ms)  # fmt: skip
                delay = self.lock_poll_s
            except WriterLockLost as exc:
                self.log.error("writer_lock_lost", error=str(exc), action="stopped writing; exiting")
                return EXIT_FAILURE
            except TRANSIENT_REDIS_ERRORS as exc:
                self.redis_error = f"{type(exc).__name__}: {exc}"
                self.log.warning("redis_unavailable", url=redact_url(cfg.store.redis.url), error=str(exc),
                                 retry_in_s=delay)  # fmt: skip
                delay = min(delay * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        self.role = "stopped"
        self.log.info("sync_stopped", stats=self._stats())
        return EXIT_OK

    async def _until_stopped(self, work: Awaitable[T], lock: WriterLock) -> T | None:
        """``work``, unless a stop request or the loss of the lock comes first (then None,
        and ``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self.stop.wait())
        watcher = asyncio.ensure_future(self._watch_lock(lock))
        try:
            await asyncio.wait((task, stopper, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stopper, watcher):
                t.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, stopper, watcher, return_exceptions=True)
        if task.cancelled():
            return None
        return task.result()  # raises what the work raised

    async def _serve(self, lock: WriterLock) -> int:
        cfg = self.config
        self.lock = lock
        self.role, self.holder, self.redis_error = "writer", "", ""
        self.writer = writer = ListWriter(self.redis, self.prefix, lock=lock, bloom_fp_rate=cfg.store.bloom_fp_rate)
        self.log.info("writer_lock_taken", holder=lock.token, ttl_s=cfg.sync.lock_ttl_s)
        stats = self.supervisor.start("sync-stats", self._log_stats, critical=False)
        actions: asyncio.Task[None] | None = None
        try:
            if not writer.atomic:  # a Cluster writer that died may have logged changes it did not apply
                replayed = await writer.replay_unapplied()
                if replayed:
                    self.log.warning("stream_tail_replayed", changes=replayed)
            try:
                await self._until_stopped(self.import_at_start(), lock)
            except (ListFormatError, OSError, WriterError) as exc:
                if isinstance(exc, WriterLockLost):
                    raise
                self.log.error("snapshot_import_failed", error=str(exc), action="exiting")
                return EXIT_FAILURE
            if lock.lost or self.stop.is_set():
                return EXIT_OK  # lock loss: WriterLockLost is raised as the lock's block ends
            # The list changes detection's findings ask for (and their undoing), applied
            # by this writer and audited (sync/detection_actions.py).
            self.actions = DetectionActions(self.redis, self.prefix, writer)
            actions = self.supervisor.start("detection-actions", self.actions.run, stop_on=(WriterLockLost,))
            mqtt = cfg.sync.mqtt
            if mqtt is None:
                self.log.info("sync_no_feed", hint="no sync.mqtt: snapshots were imported; waiting for a signal")
                await self._until_stopped(self.stop.wait(), lock)
                return EXIT_OK
            lo, hi = self.feed_backoff_s
            self.feed = MqttFeed(mqtt, writer, self.redis, self.prefix, self.resync, backoff_min_s=lo, backoff_max_s=hi)
            # A crash of the feed is logged, counted and restarted (the broker keeps the
            # unacknowledged message); a lost lock ends it, and this process.
            feed = self.supervisor.start("mqtt-feed", self.feed.run, stop_on=(WriterLockLost,))
            await self._until_stopped(feed, lock)
            return EXIT_OK
        finally:
            for task in (stats, actions) if actions is not None else (stats,):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WriterLockLost):
                    await task
            self.log.info("sync_stats", final=True, lock_lost=lock.lost, **self._stats())


async def run_sync(config: Config, *, stop: asyncio.Event | None = None, install_signals: bool = True) -> int:
    """Run the sync process until SIGTERM/SIGINT (or ``stop``); returns the exit code."""
    proc = SyncProcess(config, stop=stop)
    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, proc.stop.set)
        # SIGUSR1: the operator's --force for a resync the guards refused.
        loop.add_signal_handler(signal.SIGUSR1, proc.force_resync)
    return await proc.run()


def add_sync_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``sync``; ``args.handler`` is :func:`cmd_sync`."""
    p = subparsers.add_parser(
        "sync", help="keep the lists in Redis in step with the master list (snapshots + MQTT feed)"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML configuration (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=cmd_sync)
    return p


def cmd_sync(args: argparse.Namespace) -> int:
    """``s13eir sync --config PATH``; returns the exit code."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"s13eir sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    if config.store.backend != "redis":
        get_logger("s13eir.sync").warning(
            "store_backend_not_redis", backend=config.store.backend, hint="nodes with it do not read Redis"
        )
    try:
        return asyncio.run(run_sync(config))
    except ValueError as exc:  # store.redis.url unusable
        print(f"s13eir sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
