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
import operator
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from .bloom import new_bloom
from .snapshot import ListSnapshot, SnapshotBuilder

_KINDS = {"black": ListKind.BLACK, "grey": ListKind.GREY, "white": ListKind.WHITE}
_IMEI_LISTS = ("black", "grey", "white")
_BACKOFF_MAX_S = 1.0  # Redis back: ready (and answering from it) within about a second
_FRESH_S = 2.0
# A rebuild also takes in the adds of the last _RECENT_S seconds (at most _RECENT_ADDS):
# a Cluster writer may not have written them yet when the scan reads their buckets.
_RECENT_S = 10.0
_RECENT_ADDS = 100_000

Confirmed = Callable[["Facts | StoreUnavailable"], None]


class StoreUnavailable(Exception):
    """Redis could not confirm a Bloom positive; ``last_known`` is this node's last
    confirmed answer for the same IMEI and IMSI, if any; ``positives`` the lists whose
    Bloom filters hold the IMEI (what the outage policy may go by)."""

    def __init__(self, reason: str, last_known: Facts | None, positives: frozenset[str] = frozenset()) -> None:
        super().__init__(reason)
        self.last_known = last_known
        self.positives = positives


class StoreRegressed(Exception):
    """The store is not the one this node read, or went back (see the module docstring)."""


@dataclass
class _List:
    name: str
    gen: int
    bloom: Bloom | None = None
    count: int = 0
    removals: int = 0
    meta: dict[int, tuple[str, str, str]] = field(default_factory=dict)


@dataclass
class StoreStats:
    """Plain counters, read by the metrics collector at scrape time."""

    bloom_positives: int = 0
    bloom_negatives: int = 0
    remote_lookups: int = 0
    remote_empty: int = 0  # Bloom positives that Redis did not confirm: false positives
    remote_failures: int = 0
    cache_hits: int = 0
    changes_applied: int = 0
    reloads: int = 0
    follower_failures: int = 0  # the change follower hit an unexpected error and reloaded
    regressions: int = 0  # times the store was found empty, replaced or gone back
    confirm_failures: int = 0  # unexpected errors while confirming a batch (answered per policy)


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
        self._lists: dict[str, _List] = {}
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
        self._recent_adds: deque[tuple[float, str, int]] = deque(maxlen=_RECENT_ADDS)
        # Cluster only: the writer logs a change before it applies it, so for a moment after
        # the record a lookup can read the old value. Answers for IMEIs changed in the last
        # _FRESH_S seconds are not cached (they are asked again), lest the old one stick.
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

    def _facts_of(self, imei14: str, imsi: str | None, hits: list[tuple[_List, list[int]]], exc: _List | None) -> Facts:
        entries: list[Entry] = []
        exception = None
        for lst, ids in hits:
            if lst is exc:
                exception = ExceptionEntry(imei14, imsi or "", self._meta(exc, ids[0])[1])
            else:
                entries.extend(self._entries(lst, imei14, ids))
        return self._with_rules(imei14, exception, tuple(entries))

    def _decode(
        self, results: list[Any], lists: list[_List], batch: list[Any], exc: _List | None
    ) -> tuple[list[list[tuple[_List, list[int]]]], dict[str, set[int]]]:
        """Per lookup, the lists that hold it with their meta ids (each reply value decoded
        once), and the meta ids this node has not loaded yet: deltas may have created them
        after it loaded the table."""
        found: list[list[tuple[_List, list[int]]]] = []
        missing: dict[str, set[int]] = {}
        it = iter(results)
        with_exc = [*lists, exc] if exc is not None else lists  # the order of the reply
        for _imei, imsi, _ in batch:
            hits: list[tuple[_List, list[int]]] = []
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
        self, batch: list[tuple[str, str | None, Confirmed]], lists: list[_List], exc: _List | None
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

    def _meta(self, lst: _List, i: int) -> tuple[str, str, str]:
        return lst.meta.get(i, (lst.name, "", ""))

    def _entries(self, lst: _List, imei14: str, ids: list[int]) -> list[Entry]:
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
        lists: dict[str, _List] = {}
        rules = self._rules
        if not problem:
            try:
                for name, gen in current.items():
                    if name in L.LISTS:
                        lists[name] = await self._load_list(name, gen, seq, epoch)
                rules = await self._load_rules(current.get(L.RULES))
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

    async def _load_list(self, name: str, gen: int, upto: int | None = None, epoch: str | None = None) -> _List:
        p = self.prefix
        info = {as_text(k): as_text(v) for k, v in (await self.redis.hgetall(L.k_info(p, gen))).items()}
        if info.get("state") != "ready" or info.get("list") != name:
            raise StoreRegressed(f"the current {name} generation {gen} is gone or not ready ({L.k_info(p, gen)})")
        if epoch is not None and info.get("epoch") not in (None, epoch):
            # The generation belongs to another store than the one this node follows.
            raise StoreRegressed(f"the current {name} generation {gen} has epoch {info.get('epoch')}, not {epoch}")
        meta = {int(k): L.decode_meta(as_text(v)) for k, v in (await self.redis.hgetall(L.k_meta(p, gen))).items()}
        lst = _List(name, gen, count=int(info.get("count", 0) or 0), meta=meta)
        data = await self.redis.get(L.k_bloom(p, gen))
        if not data:
            lst.bloom = await self._scan_bloom(name, gen, lst.count)
            return lst
        lst.bloom = Bloom.load_bytes(data, operator.index)
        # The saved filter covers the generation as imported (info.seq); IMEIs added to it
        # since then come from the change stream, or, if the stream no longer reaches back
        # that far, from a scan.
        since = int(info.get("seq", 0) or 0)
        if upto is not None and upto > since and not await self._replay_adds(lst, since, upto):
            lst.bloom = await self._scan_bloom(name, gen, lst.count)
        return lst

    async def _replay_adds(self, lst: _List, since: int, upto: int) -> bool:
        """Add to ``lst``'s filter the IMEIs added to its generation in (since, upto]; False
        when the stream was trimmed past ``since``."""
        assert lst.bloom is not None
        stream = L.k_changes(self.prefix)
        start = f"{since + 1}-0"
        first = True
        while True:
            batch = await self.redis.xrange(stream, min=start, max=f"{upto}-0", count=10_000)
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

    async def _scan_bloom(self, name: str, gen: int, count: int) -> Bloom:
        """Fallback when the writer saved no filter: rebuild it by scanning the buckets."""
        p = self.prefix
        bloom = new_bloom(max(count, 1), self.bloom_fp_rate)
        exceptions = name == "exceptions"
        pattern = f"{p}:g:{gen}:{'x' if exceptions else 'e'}:*"
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            bucket = int(as_text(key).rsplit(":", 1)[1])
            for fld in await self.redis.hkeys(key):
                suffix = as_text(fld).split(":", 1)[0]
                bloom.add(bucket * L.BUCKET + int(suffix))
        return bloom

    async def _load_rules(self, gen: int | None) -> ListSnapshot:
        if gen is None:
            return ListSnapshot.empty()
        p = self.prefix
        if as_text(await self.redis.hget(L.k_info(p, gen), "state")) != "ready":
            raise StoreRegressed(f"the current rules generation {gen} is gone or not ready ({L.k_info(p, gen)})")
        meta = {int(k): L.decode_meta(as_text(v)) for k, v in (await self.redis.hgetall(L.k_meta(p, gen))).items()}
        b = SnapshotBuilder()
        for tac, ids in (await self.redis.hgetall(L.k_tac(p, gen))).items():
            for i in L.decode_ids(ids):
                kind, source, detail = meta.get(i, ("black", "", ""))
                b.add_tac(as_text(tac), ListKind(kind), source, detail)
        for rng, ids in (await self.redis.hgetall(L.k_ranges(p, gen))).items():
            first, last = as_text(rng).split("-", 1)
            for i in L.decode_ids(ids):
                kind, source, detail = meta.get(i, ("black", "", ""))
                b.add_range(first, last, ListKind(kind), source, detail)
        return b.build()

    # -- following the change stream ----------------------------------------------------

    async def _follow(self) -> None:
        backoff = 0.1
        stream = L.k_changes(self.prefix)
        while not self._stopping:
            try:
                if (not self.loaded or not self.healthy) and not await self._load_all():
                    # Empty, replaced or gone back: keep what we have and look again, at
                    # least every second (three small reads), to recover soon after a re-import.
                    await asyncio.sleep(min(backoff, 1.0))
                    backoff = min(_BACKOFF_MAX_S, backoff * 2)
                    continue
                resp = await self.redis.xread({stream: f"{self.seq}-0"}, count=1000, block=1000)
                self.healthy = True
                backoff = 0.1
                if not resp:
                    # A quiet second: make sure the store is still the one we follow (a
                    # Redis that restarted empty has no stream to wake us up with).
                    if await self._moved_back():
                        await self._load_all()
                    continue
                for _name, entries in resp:
                    for _id, fields in entries:
                        if not await self._apply({as_text(k): as_text(v) for k, v in fields.items()}):
                            break
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                if self.healthy:
                    self.log.error("redis_unavailable", error=str(e))
                self.healthy = False
                if not self.regressed:
                    self.last_error = f"{type(e).__name__}: {e}"
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
            except StoreRegressed as e:
                self._regress(str(e))
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
            except Exception as e:
                # A bug must not end the follower: a dead follower leaves the node answering
                # from a view that no longer moves, while it looks healthy. The view may be
                # half-applied: count it, say so on /readyz, and rebuild it from Redis.
                self.stats.follower_failures += 1
                self.log.exception("change_follower_failed", seq=self.seq)
                self.healthy = False
                self.last_error = f"change follower failed: {type(e).__name__}: {e}"
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)

    async def _apply(self, fields: Mapping[str, str]) -> bool:
        """Apply one stream record; False when the view had to be reloaded instead."""
        try:
            seq, gen, change = L.parse_change(fields)
        except (KeyError, ValueError) as e:
            self.log.error("bad_change_record", error=str(e), record=dict(fields))
            return True
        if seq <= self.seq:
            return True
        if seq != self.seq + 1:
            self.log.warning("change_stream_gap", expected=self.seq + 1, got=seq)
            await self._load_all()
            return False
        if isinstance(change, str):  # a list got a new generation (import or rollback)
            await self._reload_list(change, gen)
        else:
            lst = self._lists.get(change.list)
            if lst is not None:
                n = int(change.imei)
                if change.op == "add":
                    if lst.bloom is None:
                        lst.bloom = new_bloom(1024, self.bloom_fp_rate)
                    lst.bloom.add(n)
                    pending = self._added_during_rebuild.get(lst.name)
                    if pending is not None:
                        pending.append(n)
                    self._recent_adds.append((asyncio.get_running_loop().time(), lst.name, n))
                    # By identity: rbloom's == raises ValueError for filters of different sizes.
                    if not any(b is lst.bloom for b in self._blooms):
                        self._blooms = (*self._blooms, lst.bloom)
                    lst.count += 1
                else:
                    lst.removals += 1
                    if (
                        lst.removals > self.rebuild_after_removals * max(lst.count, 1)
                        and lst.name not in self._rebuilding
                    ):
                        # Marked now, not when the task starts: the other removals of this
                        # batch must not start a rebuild each (one scan of Redis per removal).
                        self._rebuilding.add(lst.name)
                        since = asyncio.get_running_loop().time() - _RECENT_S
                        self._added_during_rebuild[lst.name] = [
                            m for t, name, m in self._recent_adds if name == lst.name and t >= since
                        ]
                        self._spawn("bloom-rebuild", self._rebuild(lst.name))
            elif change.op == "add":
                await self._reload_list(change.list, gen)
            self._invalidate(change.imei)
            if self._confirm_script is None:  # a Cluster: see _fresh
                now = asyncio.get_running_loop().time()
                if len(self._fresh) > 10_000:
                    self._fresh = {k: v for k, v in self._fresh.items() if v > now}
                self._fresh[change.imei] = now + _FRESH_S
            self.stats.changes_applied += 1
        self.seq = seq
        return True

    async def _reload_list(self, name: str, gen: int) -> None:
        if name == L.RULES:
            self._rules, self._rules_gen = await self._load_rules(gen), gen
        else:
            self._lists[name] = await self._load_list(name, gen, self.seq, self.epoch)
            self._blooms = tuple(x.bloom for x in self._lists.values() if x.bloom is not None and x.count)
        self._cache.clear()
        self._cache_keys.clear()
        self.log.info("redis_list_reloaded", list=name, generation=gen)

    async def _rebuild(self, name: str) -> None:
        """Removals leave their IMEIs in the filter and raise its false-positive rate:
        rebuild it from Redis in the background, then swap it in."""
        try:
            lst = self._lists.get(name)
            if lst is None:
                return
            gen = lst.gen
            bloom = await self._scan_bloom(name, gen, lst.count)
            # The same list object, not just the same generation: a re-read meanwhile (a
            # stream gap, a reconnect) built a filter of its own, with adds this scan missed.
            if self._lists.get(name) is lst and not self.regressed:
                for n in self._added_during_rebuild.get(name, ()):  # no await from here to the swap
                    bloom.add(n)
                lst.bloom, lst.removals = bloom, 0
                self._blooms = tuple(x.bloom for x in self._lists.values() if x.bloom is not None and x.count)
                self.log.info("bloom_rebuilt", list=name, generation=gen)
        except (RedisError, OSError) as e:
            self.log.error("bloom_rebuild_failed", list=name, error=str(e))
        finally:
            self._rebuilding.discard(name)
            self._added_during_rebuild.pop(name, None)

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
