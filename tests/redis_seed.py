"""Writing list generations straight into Redis in the documented layout, so that
the node's reader is tested independently of the writer."""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from s13eir.lists import redis_layout as L
from s13eir.lists.bloom import new_bloom


def seed_list(
    r: redis.Redis,
    list_name: str,
    rows: Iterable[tuple[str, str]],  # (imei14, reason) or, for exceptions, (imei14, imsi)
    *,
    prefix: str = "s13eir",
    source: str = "test-feed",
    with_bloom: bool = True,
    epoch: str = "seed-epoch",
) -> int:
    """Write one list as a new current generation; returns the generation. The store's
    epoch is created as the writer does, at the first generation."""
    rows = list(rows)
    gen = int(r.incr(L.k_nextgen(prefix)))
    meta: dict[tuple[str, str, str], int] = {}
    bloom = new_bloom(max(len(rows), 1))
    r.set(L.k_epoch(prefix), epoch, nx=True)
    pipe = r.pipeline()
    for imei, value in rows:
        n = int(imei)
        bloom.add(n)
        if list_name == "exceptions":
            mid = meta.setdefault((list_name, source, ""), len(meta) + 1)
            pipe.hset(L.k_exception_bucket(prefix, gen, n), L.exception_field(n, value), str(mid))
        else:
            mid = meta.setdefault((list_name, source, value), len(meta) + 1)
            pipe.hset(L.k_imei_bucket(prefix, gen, n), L.imei_field(n), str(mid))
    for (lst, src, detail), mid in meta.items():
        pipe.hset(L.k_meta(prefix, gen), str(mid), L.encode_meta(lst, src, detail))
    pipe.hset(L.k_info(prefix, gen), mapping={"list": list_name, "state": "ready", "count": len(rows),
                                              "created": int(time.time()), "epoch": epoch})  # fmt: skip
    if with_bloom:
        pipe.set(L.k_bloom(prefix, gen), bloom.save_bytes())
    pipe.hset(L.k_current(prefix), list_name, gen)
    pipe.execute()
    return gen


def append_change(r: redis.Redis, change: L.Change, *, prefix: str = "s13eir", apply: bool = True) -> int:
    """Apply one change to the current generation and log it, as the writer does (with
    ``apply=False`` only log it, as a Cluster writer does first)."""
    seq = int(r.incr(L.k_seq(prefix)))
    gen = int(r.hget(L.k_current(prefix), change.list) or 0)
    n = int(change.imei)
    pipe = r.pipeline()
    pipe.xadd(L.k_changes(prefix), L.change_fields(seq, gen, change), id=f"{seq}-0")
    if not apply:
        pipe.execute()
        return seq
    if change.list == "exceptions":
        key, fld = L.k_exception_bucket(prefix, gen, n), L.exception_field(n, change.imsi)
    else:
        key, fld = L.k_imei_bucket(prefix, gen, n), L.imei_field(n)
    if change.op == "add":
        mid = 900 + len(change.reason) % 50
        pipe.hset(L.k_meta(prefix, gen), str(mid), L.encode_meta(change.list, change.source, change.reason))
        pipe.hset(key, fld, str(mid))
    else:
        pipe.hdel(key, fld)
    pipe.execute()
    return seq
