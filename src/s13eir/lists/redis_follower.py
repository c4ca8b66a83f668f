"""Following the change stream for a Redis-backed list store (``redis_store``): each
record applied to the node's Bloom filters, metadata and cache in order; a gap, a store
that went back or an unexpected error reloads the view from Redis; removals past
``store.redis.rebuild_after_removals`` rebuild a list's Bloom filter in the background,
with the adds that arrived meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from s13eir.backends.redis_client import as_text

from . import redis_layout as L
from .bloom import new_bloom
from .redis_loading import load_list, load_rules
from .store_state import BACKOFF_MAX_S, FRESH_S, RECENT_S, StoreRegressed

if TYPE_CHECKING:
    from .redis_store import RedisLists

__all__ = ["follow", "reload_list"]


async def follow(store: RedisLists) -> None:
    """The change follower: every record of ``P:changes`` applied to this node's view, a
    reload on a gap or a store that moved back, reconnection with backoff. Runs under
    the supervisor (a crash is logged, counted, restarted and shown on /readyz)."""
    backoff = 0.1
    stream = L.k_changes(store.prefix)
    while not store._stopping:
        try:
            if (not store.loaded or not store.healthy) and not await store._load_all():
                # Empty, replaced or gone back: keep what we have and look again, at
                # least every second (three small reads), to recover soon after a re-import.
                await asyncio.sleep(min(backoff, 1.0))
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            resp = await store.redis.xread({stream: f"{store.seq}-0"}, count=1000, block=1000)
            store.healthy = True
            backoff = 0.1
            if not resp:
                # A quiet second: make sure the store is still the one we follow (a
                # Redis that restarted empty has no stream to wake us up with).
                if await store._moved_back():
                    await store._load_all()
                continue
            for _name, entries in resp:
                for _id, fields in entries:
                    if not await _apply(store, {as_text(k): as_text(v) for k, v in fields.items()}):
                        break
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as e:
            if store.healthy:
                store.log.error("redis_unavailable", error=str(e))
            store.healthy = False
            if not store.regressed:
                store.last_error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
        except StoreRegressed as e:
            store._regress(str(e))
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
        except Exception as e:
            # A bug must not end the follower: a dead follower leaves the node answering
            # from a view that no longer moves, while it looks healthy. The view may be
            # half-applied: count it, say so on /readyz, and rebuild it from Redis.
            store.stats.follower_failures += 1
            store.log.exception("change_follower_failed", seq=store.seq)
            store.healthy = False
            store.last_error = f"change follower failed: {type(e).__name__}: {e}"
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)


async def _apply(store: RedisLists, fields: Mapping[str, str]) -> bool:
    """Apply one stream record; False when the view had to be reloaded instead."""
    try:
        seq, gen, change = L.parse_change(fields)
    except (KeyError, ValueError) as e:
        store.log.error("bad_change_record", error=str(e), record=dict(fields))
        return True
    if seq <= store.seq:
        return True
    if seq != store.seq + 1:
        store.log.warning("change_stream_gap", expected=store.seq + 1, got=seq)
        await store._load_all()
        return False
    if isinstance(change, str):  # a list got a new generation (import or rollback)
        await reload_list(store, change, gen)
    else:
        lst = store._lists.get(change.list)
        if lst is not None:
            n = int(change.imei)
            if change.op == "add":
                if lst.bloom is None:
                    lst.bloom = new_bloom(1024, store.bloom_fp_rate)
                lst.bloom.add(n)
                pending = store._added_during_rebuild.get(lst.name)
                if pending is not None:
                    pending.append(n)
                store._recent_adds.append((asyncio.get_running_loop().time(), lst.name, n))
                # By identity: rbloom's == raises ValueError for filters of different sizes.
                if not any(b is lst.bloom for b in store._blooms):
                    store._blooms = (*store._blooms, lst.bloom)
                lst.count += 1
            else:
                lst.removals += 1
                if (
                    lst.removals > store.rebuild_after_removals * max(lst.count, 1)
                    and lst.name not in store._rebuilding
                ):
                    # Marked now, not when the task starts: the other removals of this
                    # batch must not start a rebuild each (one scan of Redis per removal).
                    store._rebuilding.add(lst.name)
                    since = asyncio.get_running_loop().time() - RECENT_S
                    store._added_during_rebuild[lst.name] = [
                        m for t, name, m in store._recent_adds if name == lst.name and t >= since
                    ]
                    store._spawn("bloom-rebuild", _rebuild(store, lst.name))
        elif change.op == "add":
            await reload_list(store, change.list, gen)
        store._invalidate(change.imei)
        if store._confirm_script is None:  # a Cluster: see _fresh
            now = asyncio.get_running_loop().time()
            if len(store._fresh) > 10_000:
                store._fresh = {k: v for k, v in store._fresh.items() if v > now}
            store._fresh[change.imei] = now + FRESH_S
        store.stats.changes_applied += 1
    store.seq = seq
    return True


async def reload_list(store: RedisLists, name: str, gen: int) -> None:
    if name == L.RULES:
        store._rules, store._rules_gen = await load_rules(store, gen), gen
    else:
        store._lists[name] = await load_list(store, name, gen, store.seq, store.epoch)
        store._blooms = tuple(x.bloom for x in store._lists.values() if x.bloom is not None and x.count)
    store._cache.clear()
    store._cache_keys.clear()
    store.log.info("redis_list_reloaded", list=name, generation=gen)


async def _rebuild(store: RedisLists, name: str) -> None:
    """Removals leave their IMEIs in the filter and raise its false-positive rate:
    rebuild it from Redis in the background, then swap it in."""
    try:
        lst = store._lists.get(name)
        if lst is None:
            return
        gen = lst.gen
        bloom = await store._scan_bloom(name, gen, lst.count)
        # The same list object, not just the same generation: a re-read meanwhile (a
        # stream gap, a reconnect) built a filter of its own, with adds this scan missed.
        if store._lists.get(name) is lst and not store.regressed:
            for n in store._added_during_rebuild.get(name, ()):  # no await from here to the swap
                bloom.add(n)
            lst.bloom, lst.removals = bloom, 0
            store._blooms = tuple(x.bloom for x in store._lists.values() if x.bloom is not None and x.count)
            store.log.info("bloom_rebuilt", list=name, generation=gen)
    except (RedisError, OSError) as e:
        store.log.error("bloom_rebuild_failed", list=name, error=str(e))
    finally:
        store._rebuilding.discard(name)
        store._added_during_rebuild.pop(name, None)
