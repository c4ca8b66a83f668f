"""The lists a node answers from: loaded at start-up and, for list files, reloaded on
SIGHUP through the guards.

At start: the embedded list files (parsed in a thread, see :mod:`s13eir.lists.loading`,
while ``/readyz`` reports the progress), the snapshot the supervisor mapped for its
workers, or Redis (read on the loop, which awaits Redis between steps). A reload reads
the files again; a file that does not parse, or lists the guards refuse (``force``
overrides them), leaves the running lists in place and says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import Config
from .lists.configured import load_snapshot
from .lists.formats import ListFormatError
from .lists.loading import in_thread
from .lists.mmap_snapshot import load_mapped
from .lists.progress import LoadProgress
from .lists.reload_guard import reload_refusals
from .lists.snapshot import ListSnapshot
from .observability.metrics import Metrics
from .observability.redact import redact_url

if TYPE_CHECKING:
    from .lists.redis_store import RedisLists


class StartError(Exception):
    """The node cannot start (for instance, its lists cannot be loaded from Redis)."""


class NodeLists:
    def __init__(
        self,
        config: Config,
        *,
        shared: str | None,
        redis: RedisLists | None,
        metrics: Metrics,
        log: Any,
        install: Callable[[ListSnapshot], None],
        current: Callable[[], ListSnapshot],
    ) -> None:
        self.config = config
        self.shared = shared  # a snapshot file mapped from the supervisor (serve --workers)
        self.redis = redis
        self.metrics = metrics
        self.log = log
        self._install = install
        self._current = current
        # Set until load() is done: /readyz reports it.
        self.progress: LoadProgress | None = LoadProgress()

    async def load(self, health: str | None) -> None:
        progress = self.progress
        assert progress is not None
        started = time.perf_counter()
        if self.redis is not None:
            progress.set_phase("reading the lists from Redis")
            self.log.info("lists_loading", store="redis", health=health)
            from redis.exceptions import RedisError

            try:
                await self.redis.start()
            except (RedisError, OSError) as e:
                url = redact_url(self.config.store.redis.url)
                raise StartError(f"cannot load the lists from Redis ({url}): {e}") from e
        else:
            shared, config = self.shared, self.config
            if shared:
                progress.set_phase(f"mapping the shared list snapshot {shared}")
                self.log.info("lists_loading", store="shared", path=shared, health=health)
                snapshot = await in_thread(lambda: load_mapped(shared), "s13eir-lists")
            else:
                self.log.info("lists_loading", store="embedded", files=len(config.store.lists), health=health)
                snapshot = await in_thread(lambda: load_snapshot(config, progress), "s13eir-lists")
            # The thread is done with the snapshot, which is never modified after build():
            # from here it belongs to the loop, like a reload's.
            self._install(snapshot)
            self.log.info(
                "lists_loaded",
                **snapshot.counts(),
                memory_bytes=snapshot.memory_bytes(),
                seconds=round(time.perf_counter() - started, 3),
            )
        self.progress = None

    async def reload(self, config: Config, force: bool) -> bool:
        """The list files of ``config`` in place of the running ones; False (logged,
        counted) when they cannot be used. Redis-backed lists follow the writer instead."""
        if self.redis is not None:
            return True
        snapshot = await self._read(config, force)
        if snapshot is None:
            return False
        self._install(snapshot)
        self.metrics.reloads_ok += 1
        self.log.info("lists_reloaded", **snapshot.counts(), memory_bytes=snapshot.memory_bytes())
        return True

    async def _read(self, config: Config, force: bool) -> ListSnapshot | None:
        running = self._current()
        try:
            if self.shared:
                snapshot = load_mapped(self.shared)  # the supervisor checked and wrote it
            else:
                snapshot = await asyncio.get_running_loop().run_in_executor(None, load_snapshot, config)
        except (ListFormatError, OSError, ValueError) as exc:
            self.metrics.reloads_failed += 1
            self.log.error("lists_reload_failed", error=str(exc), kept=running.counts())
            return None
        if not self.shared:  # with --workers the supervisor applied the guards
            refusals = reload_refusals(running.counts(), snapshot.counts(), config.sync.guards)
            if refusals and not force:
                self.metrics.reloads_refused += 1
                self.log.error(
                    "lists_reload_refused",
                    refused=refusals,
                    kept=running.counts(),
                    offered=snapshot.counts(),
                    override="send SIGUSR1 to load these files anyway",
                )
                return None
            if refusals:
                self.log.warning("lists_reload_forced", overridden=refusals)
        return snapshot
