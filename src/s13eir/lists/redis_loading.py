"""Loading a list of a Redis-backed store into this node: its generation's Bloom filter
(the writer's copy, else a scan of its buckets), the adds since that copy was made, its
metadata; and the TAC and range rules into a snapshot. Used at start, after a gap or a
store that came back (``redis_store``), and by the change follower (``redis_follower``)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rbloom import Bloom

from s13eir.backends.redis_client import as_text

from ..decision.model import ListKind
from . import redis_layout as L
from .bloom import new_bloom
from .snapshot import ListSnapshot, SnapshotBuilder
from .store_state import StoreRegressed

if TYPE_CHECKING:
    from .redis_store import RedisLists

__all__ = ["ListView", "load_list", "load_rules", "scan_bloom"]


@dataclass
class ListView:
    """One list as this node holds it: its generation, Bloom filter, entry count, removals
    since the filter was built, and the metadata of its ids."""

    name: str
    gen: int
    bloom: Bloom | None = None
    count: int = 0
    removals: int = 0
    meta: dict[int, tuple[str, str, str]] = field(default_factory=dict)


async def load_list(
    store: RedisLists, name: str, gen: int, upto: int | None = None, epoch: str | None = None
) -> ListView:
    p = store.prefix
    info = {as_text(k): as_text(v) for k, v in (await store.redis.hgetall(L.k_info(p, gen))).items()}
    if info.get("state") != "ready" or info.get("list") != name:
        raise StoreRegressed(f"the current {name} generation {gen} is gone or not ready ({L.k_info(p, gen)})")
    if epoch is not None and info.get("epoch") not in (None, epoch):
        # The generation belongs to another store than the one this node follows.
        raise StoreRegressed(f"the current {name} generation {gen} has epoch {info.get('epoch')}, not {epoch}")
    meta = {int(k): L.decode_meta(as_text(v)) for k, v in (await store.redis.hgetall(L.k_meta(p, gen))).items()}
    lst = ListView(name, gen, count=int(info.get("count", 0) or 0), meta=meta)
    data = await store.redis.get(L.k_bloom(p, gen))
    if not data:
        lst.bloom = await store._scan_bloom(name, gen, lst.count)
        return lst
    lst.bloom = Bloom.load_bytes(data, operator.index)
    # The saved filter covers the generation as imported (info.seq); IMEIs added to it
    # since then come from the change stream, or, if the stream no longer reaches back
    # that far, from a scan.
    since = int(info.get("seq", 0) or 0)
    if upto is not None and upto > since and not await _replay_adds(store, lst, since, upto):
        lst.bloom = await store._scan_bloom(name, gen, lst.count)
    return lst


async def _replay_adds(store: RedisLists, lst: ListView, since: int, upto: int) -> bool:
    """Add to ``lst``'s filter the IMEIs added to its generation in (since, upto]; False
    when the stream was trimmed past ``since``."""
    assert lst.bloom is not None
    stream = L.k_changes(store.prefix)
    start = f"{since + 1}-0"
    first = True
    while True:
        batch = await store.redis.xrange(stream, min=start, max=f"{upto}-0", count=10_000)
        if not batch:
            return not first or since + 1 > upto
        for record_id, fields in batch:
            f = {as_text(k): as_text(v) for k, v in fields.items()}
            seq = int(f.get("seq", 0) or 0)
            if first and seq != since + 1:
                return False
            first = False
            if f.get("op") == "add" and f.get("list") == lst.name and int(f.get("gen", 0) or 0) == lst.gen:
                lst.bloom.add(int(f["imei"]))
                lst.count += 1
            start = f"({as_text(record_id)}"
        if len(batch) < 10_000:
            return True


async def scan_bloom(store: RedisLists, name: str, gen: int, count: int) -> Bloom:
    """Fallback when the writer saved no filter: rebuild it by scanning the buckets."""
    p = store.prefix
    bloom = new_bloom(max(count, 1), store.bloom_fp_rate)
    exceptions = name == "exceptions"
    pattern = f"{p}:g:{gen}:{'x' if exceptions else 'e'}:*"
    async for key in store.redis.scan_iter(match=pattern, count=1000):
        bucket = int(as_text(key).rsplit(":", 1)[1])
        for fld in await store.redis.hkeys(key):
            suffix = as_text(fld).split(":", 1)[0]
            bloom.add(bucket * L.BUCKET + int(suffix))
    return bloom


async def load_rules(store: RedisLists, gen: int | None) -> ListSnapshot:
    if gen is None:
        return ListSnapshot.empty()
    p = store.prefix
    if as_text(await store.redis.hget(L.k_info(p, gen), "state")) != "ready":
        raise StoreRegressed(f"the current rules generation {gen} is gone or not ready ({L.k_info(p, gen)})")
    meta = {int(k): L.decode_meta(as_text(v)) for k, v in (await store.redis.hgetall(L.k_meta(p, gen))).items()}
    b = SnapshotBuilder()
    for tac, ids in (await store.redis.hgetall(L.k_tac(p, gen))).items():
        for i in L.decode_ids(ids):
            kind, source, detail = meta.get(i, ("black", "", ""))
            b.add_tac(as_text(tac), ListKind(kind), source, detail)
    for rng, ids in (await store.redis.hgetall(L.k_ranges(p, gen))).items():
        first, last = as_text(rng).split("-", 1)
        for i in L.decode_ids(ids):
            kind, source, detail = meta.get(i, ("black", "", ""))
            b.add_range(first, last, ListKind(kind), source, detail)
    return b.build()
