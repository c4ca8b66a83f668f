"""Where the GSMA TAC database comes from: a file (``detection.tac_database``) or, for
the nodes of a cluster, Redis, where ``s13eir tacs import`` puts it as a generation.

Redis keys, under the prefix ``P``: ``P:tacdb:current`` (the generation nodes read; one
``SET`` makes a complete generation current), ``P:tacdb:previous``, ``P:tacdb:nextgen``,
``P:tacdb:g:<n>`` (hash: TAC -> MessagePack ``[model, device type, manufacturer, radio
accesses, allocation date]``) and ``P:tacdb:g:<n>:info`` (``count``, ``source``,
``created``). An import is refused (and nothing changes) when the file does not read
(file and line) or when it would drop more than ``max_removals`` of the TACs in force
(a truncated export), unless forced. The generation before the current one is kept;
older ones are deleted after the switch.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import msgspec

from .backends.redis_client import AnyRedis, as_text
from .detection.observation import Rat, TacInfo
from .detection.tac_db import TacDatabase, TacEntry, read_tac_file

__all__ = ["TacGuardError", "TacSource", "import_tac_db", "load_tac_db", "load_tac_file", "redis_generation"]

_CHUNK = 5000
_RATS = {r.value: r for r in Rat}


class TacGuardError(Exception):
    """An import the guards refuse."""


def k_current(p: str) -> str:
    return f"{p}:tacdb:current"


def k_generation(p: str, g: int) -> str:
    return f"{p}:tacdb:g:{g}"


def load_tac_file(path: str) -> TacDatabase:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return read_tac_file(f, path)


def _pack(e: TacEntry) -> bytes:
    i = e.info
    return msgspec.msgpack.encode([i.model, i.device_type, e.manufacturer, sorted(r.value for r in i.rats),
                                   e.allocated.isoformat()])  # fmt: skip


def _unpack(raw: bytes) -> TacEntry:
    model, device_type, manufacturer, rats, allocated = msgspec.msgpack.decode(raw)
    return TacEntry(TacInfo(model, device_type, frozenset(_RATS[r] for r in rats)), manufacturer,
                    date.fromisoformat(allocated))  # fmt: skip


async def redis_generation(r: AnyRedis, prefix: str) -> int | None:
    raw = as_text(await r.get(k_current(prefix)))
    return int(raw) if raw else None


async def import_tac_db(r: AnyRedis, prefix: str, db: TacDatabase, *, max_removals: float = 0.05,
                        force: bool = False) -> tuple[int, int]:  # fmt: skip
    """Write ``db`` as a new generation and make it current; (generation, TACs before)."""
    rc: Any = r
    before = 0
    current = await redis_generation(r, prefix)
    if current is not None:
        before = int(as_text(await rc.hget(f"{k_generation(prefix, current)}:info", "count")) or 0)
    if before and len(db) < before * (1 - max_removals) and not force:
        raise TacGuardError(f"{db.source}: {len(db):,} TACs would replace {before:,}, a drop of more than "
                            f"{max_removals:.0%} (a truncated export?); --force to import it anyway")  # fmt: skip
    gen = int(await rc.incr(f"{prefix}:tacdb:nextgen"))
    key = k_generation(prefix, gen)
    items = list(db.items())
    for i in range(0, len(items), _CHUNK):
        await rc.hset(key, mapping={tac: _pack(e) for tac, e in items[i : i + _CHUNK]})
    await rc.hset(f"{key}:info", mapping={"count": len(db), "source": db.source, "created": f"{time.time():.0f}"})
    previous = as_text(await rc.get(f"{prefix}:tacdb:previous"))
    await rc.set(k_current(prefix), gen)  # the switch: readers see the old generation or the new, whole
    if current is not None:
        await rc.set(f"{prefix}:tacdb:previous", current)
    if previous and int(previous) not in (gen, current):
        await rc.delete(k_generation(prefix, int(previous)), f"{k_generation(prefix, int(previous))}:info")
    return gen, before


async def load_tac_db(r: AnyRedis, prefix: str) -> tuple[int, TacDatabase] | None:
    """The current generation, read whole; None when there is none."""
    rc: Any = r
    gen = await redis_generation(r, prefix)
    if gen is None:
        return None
    entries: dict[str, TacEntry] = {}
    cursor = 0
    while True:
        cursor, chunk = await rc.hscan(k_generation(prefix, gen), cursor, count=_CHUNK)
        for tac, raw in chunk.items():
            entries[as_text(tac)] = _unpack(raw)
        if cursor == 0:
            break
    return gen, TacDatabase(entries, f"redis generation {gen}")


class TacSource:
    """The TAC database a process uses, swapped whole when a new one is read: the file
    given, else Redis's current generation (re-read when it changes), else none."""

    def __init__(self, path: str | None, redis: AnyRedis | None, prefix: str) -> None:
        self.path = path
        self.redis = redis if path is None else None
        self.prefix = prefix
        self.db: TacDatabase | None = None
        self.generation: int | None = None

    async def refresh(self) -> bool:
        """Read the database if it changed; True when a new one is in use."""
        if self.path is not None:
            if self.db is not None:
                return False
            self.db = load_tac_file(self.path)
            return True
        if self.redis is None:
            return False
        gen = await redis_generation(self.redis, self.prefix)
        if gen is None or gen == self.generation:
            return False
        loaded = await load_tac_db(self.redis, self.prefix)
        if loaded is None:
            return False
        self.generation, self.db = loaded
        return True

    def info(self, tac: str) -> TacInfo | None:
        db = self.db
        return db.info(tac) if db is not None else None

    def describe(self, tac: str) -> dict[str, str] | None:
        db = self.db
        return db.describe(tac) if db is not None else None
