"""The Redis-backed list store as an EIR node reads it (layout: ``redis_layout``).

The common case, a phone on no list, never leaves the process: each list has a
Bloom filter here (loaded from the writer's copy in Redis at start, then kept
current from the change stream), and TAC and range rules are held in memory. A
Bloom positive is confirmed in Redis: the lookups of one event-loop turn go out
as one pipelined round trip, with a short timeout; confirmed answers are cached
here and the cache is invalidated by the change stream.

When Redis cannot be asked, ``fetch`` fails with :class:`StoreUnavailable`
carrying the last answer confirmed for that phone, and the caller applies
``policy.store_unavailable``. The follower reconnects with backoff; a gap in the
change stream's sequence numbers (a trimmed stream, a failover that lost writes)
makes it reload everything rather than trust a partial view.

A node never trusts a store that went backwards. Every load checks the store's
identity (``P:epoch``, ``P:seq``, ``P:current``, each current generation's info)
against what the node last read. An empty store where the node had lists, a
sequence that went back, an epoch that changed while lists the node held are
missing, a current generation that vanished: the node keeps its Bloom filters, rules,
metadata and cache, asks Redis nothing more (its answers would be wrong), answers
Bloom positives per ``policy.store_unavailable``, reports ``regressed`` on
``/readyz`` (503) and in ``s13eir_store_state``, logs at error, and checks again
with backoff until a valid store is back (the lists re-imported). A node started
against a store without lists is not ready either and says which prefix it read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from rbloom import Bloom
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from s13eir.backends.redis_client import as_text
from s13eir.backends.redis_scripts import lua

from ..decision.model import NO_FACTS, REMOTE, Entry, ExceptionEntry, Facts, ListKind, NeedRemote
from ..observability.logs import get_logger
from ..supervision import Supervisor
from . import redis_layout as L
from .redis_follower import follow
from .redis_loading import ListView, load_list, load_rules, scan_bloom
from .snapshot import ListSnapshot
from .store_state import RECENT_ADDS, StoreRegressed, StoreStats, StoreUnavailable

_KINDS = {"black": ListKind.BLACK, "grey": ListKind.GREY, "white": ListKind.WHITE}
_IMEI_LISTS = ("black", "grey", "white")

Confirmed = Callable[["Facts | StoreUnavailable"], None]


class RedisLists:
    """Implements the ``Lists`` protocol of ``s13eir.s13`` over Redis."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        *,
        timeout_s: float = 0.05,
        cache_entries: int = 100_000,
        rebuild_after_removals: float = 0.2,
        bloom_fp_rate: float = 0.001,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.redis = redis
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.cache_entries = cache_entries
        self.rebuild_after_removals = rebuild_after_removals
        self.bloom_fp_rate = bloom_fp_rate
        self.stats = StoreStats()
        self.log = get_logger("s13eir.redis_store")
        self.seq = 0
        self.epoch: str | None = None  # the store's P:epoch as last loaded
        self.healthy = False
        self.loaded = False
        self.regressed = ""  # why the store is not trusted, "" while it is
        self.last_error = "not started"
        self._lists: dict[str, ListView] = {}
        self._blooms: tuple[Bloom, ...] = ()
        self._rules = ListSnapshot.empty()
        self._rules_gen: int | None = None
        self._cache: OrderedDict[tuple[str, str], Facts] = OrderedDict()
        self._cache_keys: dict[str, set[str]] = {}
        self._batch: list[tuple[str, str | None, Confirmed]] = []
        self._flush_scheduled = False
        # Batches sent and not yet answered, in the order sent: the first is the oldest.
        self._waiting: dict[int, float] = {}
        self._batches = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._follower: asyncio.Task[None] | None = None
        self._rebuilding: set[str] = set()
        # IMEIs added to a list while its filter is rebuilt: the scan may not see them (it
        # passed their bucket already, or, on a Cluster, the writer logs before it applies).
        self._added_during_rebuild: dict[str, list[int]] = {}
        # Adds applied lately, as (loop time, list, IMEI): a Cluster writer logs a slice of
        # changes, then writes it, so an add this node has already put in its filter may not
        # be in Redis yet when a rebuild starts; the rebuild's scan could pass its bucket.
        self._recent_adds: deque[tuple[float, str, int]] = deque(maxlen=RECENT_ADDS)
        # Cluster only: the writer logs a change before it applies it, so for a moment after
        # the record a lookup can read the old value. Answers for IMEIs changed in the last
        # FRESH_S seconds are not cached (they are asked again), lest the old one stick.
        self._fresh: dict[str, float] = {}
        self._stopping = False
        # Keys are computed in the script, not declared: fine on one server, not on a Cluster.
        self._confirm_script: Any = None if isinstance(redis, RedisCluster) else redis.register_script(lua("confirm"))

    # -- the request path (synchronous) ----------------------------------------

    def facts(self, imei14: str, imsi: str | None = None) -> Facts | NeedRemote:
        n = int(imei14)
        for bloom in self._blooms:
            if n in bloom:
                break
        else:
            self.stats.bloom_negatives += 1
            return self._rules.facts(imei14, None)
        self.stats.bloom_positives += 1
        # While the store is away the cache is only a last known state, and goes through
        # the outage policy (which never whitelists a black or grey positive).
        cached = self._cache.get((imei14, imsi or "")) if self.healthy else None
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        return REMOTE

    def confirm(self, imei14: str, imsi: str | None, done: Confirmed) -> None:
        """Confirm a Bloom positive in Redis; ``done`` gets the facts, or StoreUnavailable.
        Lookups made in the same loop turn share one round trip."""
        self._batch.append((imei14, imsi, done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def fetch(self, imei14: str, imsi: str | None) -> asyncio.Future[Facts]:
        """``confirm`` as a future (StoreUnavailable as its exception)."""
        fut: asyncio.Future[Facts] = asyncio.get_running_loop().create_future()

        def done(result: Facts | StoreUnavailable) -> None:
            if fut.done():
                return
            if isinstance(result, Facts):
                fut.set_result(result)
            else:
                fut.set_exception(result)

        self.confirm(imei14, imsi, done)
        return fut

    def last_known(self, imei14: str, imsi: str | None) -> Facts | None:
        return self._cache.get((imei14, imsi or ""))

    # -- batched confirmation ---------------------------------------------------

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self.regressed:  # what Redis holds now is not the lists: do not ask it
            self._unavailable(batch, self.regressed)
            return
        self._batches += 1
        self._spawn("confirm", self._flush(batch, self._batches))

    def oldest_wait(self, now: float) -> float:
        """How long the oldest unanswered lookup has waited for Redis (loop time): the
        delay admission control adds to what a request arriving now will wait."""
        started = next(iter(self._waiting.values()), None)
        return 0.0 if started is None else max(0.0, now - started)

    def _spawn(self, name: str, coro: Any) -> None:
        task = self.supervisor.spawn(name, coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[str, str | None, Confirmed]], key: int) -> None:
        self._waiting[key] = asyncio.get_running_loop().time()
        try:
            await self._confirm_batch(batch)
        finally:
            self._waiting.pop(key, None)

    async def _confirm_batch(self, batch: list[tuple[str, str | None, Confirmed]]) -> None:
        self.stats.remote_lookups += len(batch)
        lists = [self._lists[name] for name in _IMEI_LISTS if name in self._lists]
        exc = self._lists.get("exceptions")
        try:
            async with asyncio.timeout(self.timeout_s):
                # One retry on a connection error: after a Redis restart the pool still holds
                # connections to the old server, and the first command on each of them fails.
                try:
                    results = await self._lookup(batch, lists, exc)
                except RedisConnectionError:
                    results = await self._lookup(batch, lists, exc)
                epoch = as_text(results[0]) or None
                if epoch != self.epoch:
                    # Not the store the lists were read from: its "not listed" means nothing.
                    raise StoreRegressed(f"the store's epoch is {epoch}, not {self.epoch}: re-reading it")
                found, missing = self._decode(results[1:], lists, batch, exc)
                if missing:
                    await self._load_meta_ids(missing)
            answers = [
                self._facts_of(imei14, imsi, hits, exc) for (imei14, imsi, _), hits in zip(batch, found, strict=True)
            ]
        except (TimeoutError, RedisError, OSError, StoreRegressed) as e:
            self._unavailable(batch, f"{type(e).__name__}: {e}")
            return
        except Exception as e:
            # A bug here must not leave the batch's requests unanswered: they get the outage
            # policy, and the error is logged with its traceback and counted.
            self.stats.confirm_failures += 1
            self.log.exception("confirm_failed", lookups=len(batch))
            self._unavailable(batch, f"confirmation failed: {type(e).__name__}: {e}", mark_unhealthy=False)
            return
        for (imei14, imsi, done), facts in zip(batch, answers, strict=True):
            if facts is NO_FACTS:
                self.stats.remote_empty += 1
            self._remember(imei14, imsi, facts)
            self._call(done, facts)

    def _facts_of(
        self, imei14: str, imsi: str | None, hits: list[tuple[ListView, list[int]]], exc: ListView | None
    ) -> Facts:
        entries: list[Entry] = []
        exception = None
        for lst, ids in hits:
            if lst is exc:
                exception = ExceptionEntry(imei14, imsi or "", self._meta(exc, ids[0])[1])
            else:
                entries.extend(self._entries(lst, imei14, ids))
        return self._with_rules(imei14, exception, tuple(entries))

    def _decode(
        self, results: list[Any], lists: list[ListView], batch: list[Any], exc: ListView | None
    ) -> tuple[list[list[tuple[ListView, list[int]]]], dict[str, set[int]]]:
        """Per lookup, the lists that hold it with their meta ids (each reply value decoded
        once), and the meta ids this node has not loaded yet: deltas may have created them
        after it loaded the table."""
        found: list[list[tuple[ListView, list[int]]]] = []
        missing: dict[str, set[int]] = {}
        it = iter(results)
        with_exc = [*lists, exc] if exc is not None else lists  # the order of the reply
        for _imei, imsi, _ in batch:
            hits: list[tuple[ListView, list[int]]] = []
            for lst in with_exc if imsi else lists:
                value = next(it)
                if not value:
                    continue
                ids = L.decode_ids(value)
                if ids:
                    hits.append((lst, ids))
                    meta = lst.meta
                    for i in ids:
                        if i not in meta:
                            missing.setdefault(lst.name, set()).add(i)
            found.append(hits)
        return found, missing

    async def _lookup(
        self, batch: list[tuple[str, str | None, Confirmed]], lists: list[ListView], exc: ListView | None
    ) -> list[Any]:
        """The store's epoch, then per lookup: one value per list in ``lists``, then one for
        the exception pair when ``exc`` is loaded and the lookup has an IMSI; None or b""
        when absent."""
        p = self.prefix
        if self._confirm_script is not None:
            prefixes = " ".join(f"{p}:g:{lst.gen}:e:" for lst in lists)
            exc_prefix = f"{p}:g:{exc.gen}:x:" if exc is not None else ""
            imeis = "".join([b[0] for b in batch])
            imsis = ",".join([b[1] or "" for b in batch]) + ","
            args = [prefixes, exc_prefix, imeis, imsis, L.k_epoch(p)]
            values: list[Any] = await self._confirm_script(keys=[], args=args)
            return values
        # A Cluster spreads the buckets over nodes: a pipeline, which redis-py splits by slot.
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(L.k_epoch(p))
        for imei14, imsi, _ in batch:
            n = int(imei14)
            for lst in lists:
                pipe.hget(L.k_imei_bucket(p, lst.gen, n), L.imei_field(n))
            if exc is not None and imsi:
                pipe.hget(L.k_exception_bucket(p, exc.gen, n), L.exception_field(n, imsi))
        results: list[Any] = await pipe.execute()
        return results

    async def _load_meta_ids(self, missing: Mapping[str, set[int]]) -> None:
        for name, ids in missing.items():
            lst = self._lists[name]
            ordered = sorted(ids)
            values = await self.redis.hmget(L.k_meta(self.prefix, lst.gen), ordered)
            for i, v in zip(ordered, values, strict=True):
                if v is not None:
                    lst.meta[i] = L.decode_meta(as_text(v))

    def _meta(self, lst: ListView, i: int) -> tuple[str, str, str]:
        return lst.meta.get(i, (lst.name, "", ""))

    def _entries(self, lst: ListView, imei14: str, ids: list[int]) -> list[Entry]:
        out = []
        for i in ids:
            _, source, detail = self._meta(lst, i)
            out.append(Entry(_KINDS[lst.name], source, imei14, detail))
        return out

    def _with_rules(self, imei14: str, exception: ExceptionEntry | None, entries: tuple[Entry, ...]) -> Facts:
        rules = self._rules.facts(imei14, None)
        if exception is None and not entries:
            return rules
        return Facts(exception=exception, imei=entries, range=rules.range, tac=rules.tac)

    def _unavailable(
        self, batch: list[tuple[str, str | None, Confirmed]], reason: str, *, mark_unhealthy: bool = True
    ) -> None:
        self.stats.remote_failures += len(batch)
        if mark_unhealthy and not self.regressed:
            if self.healthy:
                self.log.error("redis_unavailable", error=reason)
            self.healthy = False
            self.last_error = reason
        for imei14, imsi, done in batch:
            self._call(done, StoreUnavailable(reason, self.last_known(imei14, imsi), self.positives(imei14)))

    def positives(self, imei14: str) -> frozenset[str]:
        """The lists whose Bloom filters hold ``imei14``."""
        n = int(imei14)
        return frozenset(
            name for name, lst in self._lists.items() if lst.bloom is not None and lst.count and n in lst.bloom
        )

    def _call(self, done: Confirmed, result: Facts | StoreUnavailable) -> None:
        # One failing callback must not cost the rest of the batch their answers.
        try:
            done(result)
        except Exception:
            self.log.exception("confirm_callback_failed")

    def _remember(self, imei14: str, imsi: str | None, facts: Facts) -> None:
        if self.cache_entries <= 0:
            return
        if self._fresh:
            until = self._fresh.get(imei14)
            if until is not None:
                if asyncio.get_running_loop().time() < until:
                    return
                del self._fresh[imei14]
        key = (imei14, imsi or "")
        self._cache[key] = facts
        self._cache.move_to_end(key)
        self._cache_keys.setdefault(imei14, set()).add(key[1])
        while len(self._cache) > self.cache_entries:
            (old_imei, old_imsi), _ = self._cache.popitem(last=False)
            keys = self._cache_keys.get(old_imei)
            if keys is not None:
                keys.discard(old_imsi)
                if not keys:
                    del self._cache_keys[old_imei]

    def _invalidate(self, imei14: str) -> None:
        for imsi in self._cache_keys.pop(imei14, ()):
            self._cache.pop((imei14, imsi), None)

    # -- loading -------------------------------------------------------------------

    async def start(self) -> None:
        """Load every list (Bloom filters, metadata, rules), then follow the change stream.
        A store without lists leaves the node not ready; the follower keeps checking."""
        await self._load_all()
        # Critical: while it is down the node's view does not move (/readyz says so).
        self._follower = self.supervisor.start("change-follower", self._follow)

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._follower, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        # redis-py can lose a cancellation that lands mid-command (a blocking XREAD): give
        # the tasks a moment, then close the connections, which ends any read in progress.
        if tasks:
            await asyncio.wait(tasks, timeout=1.5)
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if tasks:
            await asyncio.wait(tasks, timeout=1.5)
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: a task that ended with an error at shutdown is not news

    def _held(self) -> list[str]:
        """The lists this node holds entries of (what a valid store must still have)."""
        held = [name for name, lst in self._lists.items() if lst.count]
        if any(self._rules.counts().get(k) for k in ("tac", "ranges")):
            held.append(L.RULES)
        return held

    async def _identity(self) -> tuple[str | None, int]:
        p = self.prefix
        epoch = as_text(await self.redis.get(L.k_epoch(p))) or None
        return epoch, int(as_text(await self.redis.get(L.k_seq(p))) or 0)

    async def _moved_back(self) -> bool:
        """Whether the store's identity or current generations differ from what this
        node follows, with no change record to say so (three small reads)."""
        epoch, seq = await self._identity()
        if epoch != self.epoch or seq < self.seq:
            return True
        current = {as_text(k): int(v) for k, v in (await self.redis.hgetall(L.k_current(self.prefix))).items()}
        ours = {name: lst.gen for name, lst in self._lists.items()}
        if self._rules_gen is not None:
            ours[L.RULES] = self._rules_gen
        return any(current.get(name) != gen for name, gen in ours.items())

    def _judge(self, epoch: str | None, seq: int, current: Mapping[str, int]) -> str:
        """Why the store cannot be trusted against what this node read last; "" if it can."""
        p = self.prefix
        if not any(name in current for name in L.ALL_LISTS):
            where = f"no lists in Redis under prefix {p!r} ({L.k_current(p)} is empty or missing)"
            held = self._held()
            if held:
                return f"the store is empty: {where}, where this node read {', '.join(held)} up to seq {self.seq}"
            return where
        missing = [name for name in self._held() if name not in current]
        if self.epoch is not None and epoch != self.epoch:
            if epoch is None:
                return f"the store lost its epoch ({L.k_epoch(p)}; it was {self.epoch}): not the store this node read"
            if missing:
                return (f"the store was replaced (epoch {self.epoch} -> {epoch}) and lacks the "
                        f"{', '.join(missing)} list(s) this node read: re-import them")  # fmt: skip
            return ""  # re-imported after a loss: every list this node held is back
        if missing:
            return f"the current generation of {', '.join(missing)} vanished from {L.k_current(p)}"
        if seq < self.seq:
            return f"the change sequence went back from {self.seq} to {seq} (a restore or a failover that lost writes)"
        return ""

    async def _load_all(self) -> bool:
        """Load the store's lists if it can be trusted (True); else keep what this node
        has, mark the store regressed (or, never loaded, not ready) and return False."""
        p = self.prefix
        # Read the sequence first: changes made while we load are replayed from the stream.
        epoch, seq = await self._identity()
        current = {as_text(k): int(v) for k, v in (await self.redis.hgetall(L.k_current(p))).items()}
        problem = self._judge(epoch, seq, current)
        lists: dict[str, ListView] = {}
        rules = self._rules
        if not problem:
            try:
                for name, gen in current.items():
                    if name in L.LISTS:
                        lists[name] = await load_list(self, name, gen, seq, epoch)
                rules = await load_rules(self, current.get(L.RULES))
            except StoreRegressed as e:
                problem = str(e)
        if problem:
            self._regress(problem)
            return False
        replaced = self.epoch is not None and epoch != self.epoch
        self._lists, self._rules, self._rules_gen = lists, rules, current.get(L.RULES)
        self._blooms = tuple(lst.bloom for lst in lists.values() if lst.bloom is not None and lst.count)
        self._cache.clear()
        self._cache_keys.clear()
        self.seq, self.epoch = seq, epoch
        if self.regressed:
            self.log.warning("store_recovered", after=self.regressed, seq=seq, epoch=epoch)
        elif replaced:
            self.log.warning("store_epoch_changed", epoch=epoch, seq=seq, action="every list re-read")
        self.regressed = ""
        self.healthy = self.loaded = True
        self.last_error = ""
        self.stats.reloads += 1
        self.log.info("redis_lists_loaded", seq=seq, epoch=epoch, **{n: lst.count for n, lst in lists.items()})
        return True

    def _regress(self, problem: str) -> None:
        if not self.loaded:
            # Never loaded: nothing to keep and nothing that went back; just not ready.
            if problem != self.last_error:
                hint = "import the lists (s13eir lists import, or s13eir sync) or fix store.redis.prefix"
                self.log.error("store_not_ready", reason=problem, prefix=self.prefix, hint=hint)
            self.last_error = problem
            return
        if problem != self.regressed:
            self.stats.regressions += 1
            self.log.error("store_regressed", reason=problem, kept_seq=self.seq, kept_epoch=self.epoch,
                           kept={n: lst.count for n, lst in self._lists.items()},
                           action="keeping the lists this node has; answering Bloom positives per "
                                  "policy.store_unavailable until a valid store is back")  # fmt: skip
        self.regressed = problem
        self.healthy = False
        self.last_error = problem

    # Seams for the tests (a held or crashing step, per instance): the work is in
    # redis_follower and redis_loading.
    async def _follow(self) -> None:
        await follow(self)

    async def _scan_bloom(self, name: str, gen: int, count: int) -> Bloom:
        return await scan_bloom(self, name, gen, count)

    # -- reporting -----------------------------------------------------------------------

    def state(self) -> str:
        """``ok``; ``unavailable`` (Redis away: answering Bloom positives per policy,
        Bloom negatives as ever); ``regressed`` (see the module docstring); ``empty``
        (never loaded: no lists under the prefix, or Redis away at start)."""
        if not self.loaded:
            return "empty"
        if self.regressed:
            return "regressed"
        return "ok" if self.healthy else "unavailable"

    def ready(self) -> tuple[bool, str]:
        """Ready while the node answers from lists it can trust. Redis away with the
        lists loaded is *degraded but ready*: every node of a site shares that Redis,
        and 503 from all of them would take the EIR out of service, leaving the MMEs
        to their own fallback, which answers worse than the outage policy. A regressed
        or empty store is not ready: no node of the site can know the lists then."""
        state = self.state()
        if state == "empty":
            return False, f"lists not loaded from Redis: {self.last_error}"
        if state == "regressed":
            return False, (f"store regressed: {self.regressed}; keeping the lists read up to seq {self.seq}, "
                           "answering Bloom positives per policy.store_unavailable")  # fmt: skip
        if state == "unavailable":
            return True, (f"degraded: Redis unavailable ({self.last_error}); answering Bloom positives "
                          "per policy.store_unavailable")  # fmt: skip
        return True, "ready"

    def counts(self) -> dict[str, int]:
        out = {name: lst.count for name, lst in self._lists.items()}
        out.update({k: v for k, v in self._rules.counts().items() if k in ("tac", "ranges")})
        return out

    def bloom_info(self) -> dict[str, tuple[int, float]]:
        """Per list: (size in bits, approximate items)."""
        return {n: (x.bloom.size_in_bits, x.bloom.approx_items) for n, x in self._lists.items() if x.bloom is not None}
