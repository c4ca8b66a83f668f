"""The writer lock: one process writes the lists at a time (``s13eir sync`` or one
``s13eir lists`` command). ``SET NX PX`` on ``P:lock:writer``, renewed by a supervised
task every third of its TTL, released only by its holder (``writer_lock_*.lua``); every
write of the writer is fenced by the token (``helpers.lua``), so that a writer that lost
the lock stops instead of writing over the next holder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from s13eir.backends.redis_client import AnyRedis, as_text
from s13eir.backends.redis_scripts import lua
from s13eir.lists.redis_layout import k_lock
from s13eir.supervision import Supervisor

__all__ = ["WriterError", "WriterLock", "WriterLockHeld", "WriterLockLost", "default_holder", "writer_lock"]

log = logging.getLogger("s13eir.sync.writer")


class WriterError(Exception):
    """The writer could not do what it was asked; the lists are as they were."""


class WriterLockHeld(WriterError):
    def __init__(self, key: str, holder: str, ttl_ms: int) -> None:
        super().__init__(
            f"the writer lock {key} is held by {holder or '(unknown)'}"
            + (f" (expires in {ttl_ms / 1000:.1f} s unless renewed)" if ttl_ms > 0 else "")
        )
        self.holder = holder
        self.ttl_ms = ttl_ms


class WriterLockLost(WriterError):
    """The lock expired or was taken over while this writer worked: it stopped writing."""


@dataclass(slots=True)
class WriterLock:
    key: str
    token: str  # "<host>:<pid>:<random>": readable as the holder's name, unique per run
    ttl_ms: int
    lost: bool = False


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def writer_lock(
    redis: AnyRedis,
    prefix: str,
    ttl_s: float,
    *,
    wait: bool = False,
    poll_s: float = 0.5,
    holder: str | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[WriterLock]:
    """Hold ``P:lock:writer`` for the block: ``SET NX PX``, renewed every ttl/3 by a
    task, released only if still ours (compare-and-delete script).

    Held by another process: with ``wait`` (the sync process) poll until it is free,
    which is at the latest ``ttl_s`` after its holder died; without (the CLI) raise
    :class:`WriterLockHeld` naming the holder. If a renewal finds the lock gone, the
    lock is marked ``lost`` (writers built with it then refuse to write) and
    :class:`WriterLockLost` is raised when the block ends.
    """
    key = k_lock(prefix)
    ttl_ms = max(1, int(ttl_s * 1000))
    lock = WriterLock(key, f"{holder or default_holder()}:{secrets.token_hex(6)}", ttl_ms)
    while not await redis.set(key, lock.token, nx=True, px=ttl_ms):
        if not wait:
            other = as_text(await redis.get(key))
            pttl = int(await redis.pttl(key))
            if not other:
                continue  # released between the SET and the GET: try again
            raise WriterLockHeld(key, other, pttl)
        await asyncio.sleep(min(poll_s, ttl_s / 3))
    renew = redis.register_script(lua("writer_lock_renew"))
    release = redis.register_script(lua("writer_lock_release"))

    async def keep() -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                ok = await renew(keys=[key], args=[lock.token, ttl_ms])
            except Exception as exc:  # a blip: retry until the lock would have expired anyway
                if time.monotonic() - last_ok >= ttl_ms / 1000:
                    log.error("writer lock %s: cannot renew (%s); stopping writes", key, exc)
                    lock.lost = True
                    return
                continue
            if not ok:
                log.error("writer lock %s was lost (expired or taken over); stopping writes", key)
                lock.lost = True
                return
            last_ok = time.monotonic()

    # Supervised: a renewal that died by a bug would let the lock expire under a writer
    # that goes on writing, while another process takes it.
    task = (supervisor or Supervisor()).start("writer-lock-renewal", keep)
    try:
        yield lock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not lock.lost:
            with contextlib.suppress(Exception):  # unreachable Redis: the lock expires by itself
                await release(keys=[key], args=[lock.token])
    if lock.lost:
        raise WriterLockLost(f"the writer lock {key} was lost while writing")
