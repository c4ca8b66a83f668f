"""What every write of the lists rests on: a list's current and previous generation,
their info, making a generation current (the flip, with its stream record), deleting
old ones, the store's epoch, and the writer lock's fence on each of these. The writer's
concerns are built on it: changes (``sync/changes.py``), snapshot imports, rollback and
status (``sync/writer.py``)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster

from s13eir.backends.redis_client import AnyRedis, as_int, as_text
from s13eir.backends.redis_scripts import lua
from s13eir.lists.bloom import DEFAULT_FP_RATE, new_bloom
from s13eir.lists.redis_layout import (
    RULES,
    generation_record,
    k_bloom,
    k_changes,
    k_current,
    k_epoch,
    k_info,
    k_lock,
    k_nextgen,
    k_previous,
    k_seq,
)
from s13eir.sync.generation_scan import delete_generations, scan_keys
from s13eir.sync.imports import DEFAULT_BATCH, EMPTY_CHECKSUM, glob_escape, raise_if_cancelled
from s13eir.sync.lock import WriterError, WriterLock, WriterLockLost

log = logging.getLogger("s13eir.sync.writer")

# The stream is trimmed (approximately) to this many records: a node further behind
# finds a gap and reloads the current generations.
DEFAULT_STREAM_MAXLEN: Final = 1_000_000


class Generations:
    """A writer's state and its primitives on generations (one writer at a time: the
    caller holds the writer lock, and a writer built with it fences every write)."""

    def __init__(
        self,
        redis: AnyRedis,
        prefix: str,
        *,
        lock: WriterLock | None = None,
        bloom_fp_rate: float = DEFAULT_FP_RATE,
        atomic: bool | None = None,
        batch_size: int = DEFAULT_BATCH,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        """``atomic`` None: scripts on a single server or Sentinel, the log-then-apply
        path on a Cluster (False forces that path anywhere, for tests)."""
        self.r = redis
        self.p = prefix
        self.lock = lock
        self.bloom_fp_rate = bloom_fp_rate
        self.atomic = not isinstance(redis, RedisCluster) if atomic is None else atomic
        self.batch_size = batch_size
        self.stream_maxlen = stream_maxlen
        self._token = lock.token if lock is not None else ""
        self._flip_script = redis.register_script(lua("helpers", "flip"))
        self._apply_script = redis.register_script(lua("helpers", "apply"))

    def _check_lock(self) -> None:
        """Before each step that writes: stop if the lock is lost or the task cancelled."""
        raise_if_cancelled()
        if self.lock is not None and self.lock.lost:
            raise WriterLockLost(f"the writer lock {self.lock.key} was lost: not writing")

    async def _check_lock_remote(self) -> None:
        """The Cluster path's fencing: the token is checked before each batch."""
        self._check_lock()
        if self.lock is not None:
            token = await self.r.get(self.lock.key)
            if as_text(token) != self._token:
                self.lock.lost = True
                raise WriterLockLost(f"the writer lock {self.lock.key} is no longer ours: not writing")

    async def _gen(self, key: str, list_name: str) -> int | None:
        return as_int(await self.r.hget(key, list_name))

    async def _info(self, g: int) -> dict[str, str]:
        raw = await self.r.hgetall(k_info(self.p, g))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    def _script_error(self, exc: Exception) -> Exception:
        text = str(exc)
        if "LOCKLOST" in text:
            if self.lock is not None:
                self.lock.lost = True
            return WriterLockLost(f"the writer lock was lost: {text}")
        if "GENCHANGED" in text or "CURCHANGED" in text:
            return WriterError(f"another writer changed the lists: {text}")
        return exc

    async def _drop(self, gens: Iterable[int]) -> None:
        gens = list(gens)
        if gens:
            n = await delete_generations(self.r, self.p, gens)
            log.info("deleted generations %s (%d keys)", gens, n)

    async def _collect(self, list_name: str, keep: Iterable[int | None]) -> list[int]:
        """Delete this list's generations other than ``keep`` (older ones, or leftovers
        of an import that died). Returns those deleted."""
        keep_set = {g for g in keep if g is not None}
        stale: list[int] = []
        head = len(f"{self.p}:g:")
        async for batch in scan_keys(self.r, f"{glob_escape(self.p)}:g:*:info"):
            pipe = self.r.pipeline(transaction=False)
            for key in batch:
                pipe.hget(key, "list")
            for key, owner in zip(batch, await pipe.execute(), strict=True):
                gen = key[head:].split(b":", 1)[0]
                if as_text(owner) == list_name and gen.isdigit() and int(gen) not in keep_set:
                    stale.append(int(gen))
        stale = sorted(set(stale))
        await self._drop(stale)
        return stale

    async def _flip(self, list_name: str, new: int, new_previous: int | None, expected: int | None) -> int:
        """Make ``new`` current (and ``new_previous`` previous) with its stream record."""
        self._check_lock()
        p = self.p
        await self.r.hset(k_info(p, new), "epoch", await self._epoch())
        if self.atomic:
            try:
                seq = await self._flip_script(
                    keys=[k_lock(p), k_current(p), k_previous(p), k_seq(p), k_changes(p), k_info(p, new)],
                    args=[
                        self._token,
                        list_name,
                        new,
                        "" if new_previous is None else new_previous,
                        "" if expected is None else expected,
                        self.stream_maxlen,
                    ],
                )
            except Exception as exc:
                raise self._script_error(exc) from exc
            return int(seq)
        # Cluster: the keys live in different slots. Pointer first, record second: a crash
        # in between leaves info.seq ahead of the stream, which replay_unapplied() repairs.
        await self._check_lock_remote()
        if await self._gen(k_current(p), list_name) != expected:
            raise WriterError(f"another writer changed the {list_name} list")
        seq = int(await self.r.incr(k_seq(p)))
        await self.r.hset(k_info(p, new), mapping={"state": "ready", "seq": seq})
        await self.r.hset(k_current(p), list_name, str(new))
        if new_previous is None:
            await self.r.hdel(k_previous(p), list_name)
        else:
            await self.r.hset(k_previous(p), list_name, str(new_previous))
        await self._xadd(generation_record(seq, new, list_name), seq)
        return seq

    async def _epoch(self) -> str:
        """The store's epoch, created by the first flip on a store that has none (a new
        store, or one that lost its data: nodes then know it is not the one they read)."""
        p = self.p
        await self.r.set(k_epoch(p), f"{int(time.time())}-{secrets.token_hex(6)}", nx=True)
        return as_text(await self.r.get(k_epoch(p)))

    async def _xadd(self, fields: Mapping[str, str], seq: int) -> None:
        maxlen = self.stream_maxlen or None
        record: dict[Any, Any] = dict(fields)
        await self.r.xadd(k_changes(self.p), record, id=f"{seq}-0", maxlen=maxlen, approximate=True)

    async def _ensure_generation(self, list_name: str) -> int:
        """The list's current generation; an empty one is created for a list that has
        had no snapshot yet, so that changes have somewhere to go."""
        g = await self._gen(k_current(self.p), list_name)
        if g is not None:
            # A pointer to a generation without info (deleted by hand, a partial restore)
            # would have changes written into keys no reader trusts: refuse.
            owner, state = await self.r.hmget(k_info(self.p, g), ["list", "state"])
            if as_text(owner) != list_name or as_text(state) != "ready":
                raise WriterError(f"{list_name}: current generation {g} is not a ready {list_name} generation")
            return g
        g = int(await self.r.incr(k_nextgen(self.p)))
        await self.r.hset(
            k_info(self.p, g),
            mapping={
                "list": list_name,
                "state": "loading",
                "source": "",
                "created": int(time.time()),
                "count": 0,
                "checksum": EMPTY_CHECKSUM,
                "digest": EMPTY_CHECKSUM,
                "rows": 0,
                "adds": 0,
            },
        )
        if list_name != RULES:
            await self.r.set(k_bloom(self.p, g), new_bloom(0, self.bloom_fp_rate).save_bytes())
        await self._flip(list_name, g, None, None)
        return g
