"""The list writer's changes, rollback, lock and consistency, against real redis-servers
on free ports: a plain server (``redis_server``) and a one-node Redis Cluster."""

from __future__ import annotations

import asyncio
import itertools
import operator
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rbloom import Bloom
from redis.asyncio.cluster import RedisCluster

from s13eir.backends.redis_client import connect, parse_sentinel_url
from s13eir.config import GuardsConfig, RedisConfig
from s13eir.lists.formats import ListSpec
from s13eir.lists.redis_layout import (
    Change,
    change_fields,
    entry_checksum,
    entry_line,
    k_bloom,
    k_changes,
    k_current,
    k_feed,
    k_info,
    k_lock,
    k_previous,
    k_seq,
    parse_change,
)
from s13eir.sync.lock import WriterError, WriterLockHeld, WriterLockLost, writer_lock
from s13eir.sync.writer import ListWriter
from tests.conftest import free_port
from tests.services import RedisServer, require
from tests.sync.test_redis_imports import P, current_entries, imei, write_blacklist, write_exceptions

NO_GUARDS = GuardsConfig(min_entries_to_guard=10**9)


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def stream(r: aioredis.Redis | RedisCluster) -> list[tuple[int, int, Change | str]]:
    return [parse_change({k.decode(): v.decode() for k, v in f.items()}) for _, f in await r.xrange(k_changes(P))]


async def info(r: aioredis.Redis | RedisCluster, list_name: str) -> dict[str, str]:
    g = await r.hget(k_current(P), list_name)
    assert g is not None
    return {k.decode(): v.decode() for k, v in (await r.hgetall(k_info(P, int(g)))).items()}


async def assert_accounting(r: aioredis.Redis | RedisCluster, list_name: str) -> None:
    """info.count and info.checksum, kept up to date by changes, match the entries."""
    entries = await current_entries(r, list_name)  # type: ignore[arg-type]
    lines = [entry_line(list_name, *k.split("/")) for k in entries]
    i = await info(r, list_name)
    assert int(i["count"]) == len(entries)
    assert i["checksum"] == entry_checksum(lines)


# --- changes -------------------------------------------------------------------------------


@pytest.mark.parametrize("atomic", [True, False], ids=["script", "log-then-apply"])
async def test_change_semantics_and_stream_records(r: aioredis.Redis, tmp_path: Path, atomic: bool) -> None:
    w = ListWriter(r, P, atomic=atomic)
    path = write_blacklist(tmp_path / "b.csv", [(imei(1), "a"), (imei(2), "a"), (imei(3), "a")])
    await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=NO_GUARDS)
    g = int(await r.hget(k_current(P), "black"))
    changes = [
        Change("add", "black", imei(1), reason="stolen", source="ceir"),  # a second reason
        Change("add", "black", imei(1), reason="stolen", source="ceir"),  # idempotent
        Change("add", "black", imei(9), reason="dup", source="ceir"),  # new entry
        Change("remove", "black", imei(2)),  # whole entry
        Change("remove", "black", imei(1), source="ceir", reason="other"),  # no such id: nothing
        Change("remove", "black", imei(3), source="ceir"),  # not from ceir: stays
        Change("remove", "black", imei(7)),  # absent: nothing
        Change("add", "exceptions", imei(1), "001010000000001", source="ceir"),
    ]
    seq = await w.apply_changes(changes)
    assert await current_entries(r, "black") == {
        imei(1): {(path, "a"), ("ceir", "stolen")},
        imei(3): {(path, "a")},
        imei(9): {("ceir", "dup")},
    }
    assert await current_entries(r, "exceptions") == {f"{imei(1)}/001010000000001": {("ceir", "")}}
    recs = await stream(r)
    # generation(black), generation(exceptions: created for the change), then one record per change
    assert [x[2] for x in recs[:1]] == ["black"] and recs[-1][0] == seq == int(await r.get(k_seq(P)))
    logged = [x for x in recs if isinstance(x[2], Change)]
    assert [c for _, _, c in logged] == changes
    assert [s for s, _, _ in recs] == list(range(1, len(recs) + 1))
    raw = await r.xrange(k_changes(P), f"{logged[0][0]}-0", f"{logged[0][0]}-0")
    assert {k.decode(): v.decode() for k, v in raw[0][1].items()} == change_fields(logged[0][0], g, changes[0])
    await assert_accounting(r, "black")
    await assert_accounting(r, "exceptions")
    i = await info(r, "black")
    assert "digest" not in i and int(i["adds"]) == 1
    # Removing ceir's reason leaves the file's; removing the file's empties the entry.
    await w.apply_changes([Change("remove", "black", imei(1), source="ceir")])
    await w.apply_changes([Change("remove", "black", imei(1), source=path, reason="a")])
    assert imei(1) not in await current_entries(r, "black")
    await assert_accounting(r, "black")


@pytest.mark.parametrize("atomic", [True, False], ids=["script", "log-then-apply"])
async def test_feed_sequence_numbers_apply_exactly_once(r: aioredis.Redis, atomic: bool) -> None:
    w = ListWriter(r, P, atomic=atomic)
    set5 = [Change("add", "black", imei(i), reason="r", source="mqtt") for i in range(3)]
    s1 = await w.apply_changes(set5, feed="ceir", feed_seq=5)
    assert await r.hget(k_feed(P, "ceir"), "seq") == b"5"
    n = len(await stream(r))
    # Redelivered after a crash before the acknowledgement: nothing happens.
    assert await w.apply_changes(set5, feed="ceir", feed_seq=5) == s1
    assert await w.apply_changes([Change("remove", "black", imei(0))], feed="ceir", feed_seq=4) == s1
    assert len(await stream(r)) == n and len(await current_entries(r, "black")) == 3
    s2 = await w.apply_changes([Change("remove", "black", imei(0))], feed="ceir", feed_seq=6)
    assert s2 == s1 + 1 and await r.hget(k_feed(P, "ceir"), "seq") == b"6"
    assert await w.apply_changes([], feed="ceir", feed_seq=7) == s2  # an empty set still counts
    assert await r.hget(k_feed(P, "ceir"), "seq") == b"7"
    assert (await w.status())["feeds"] == {"ceir": 7}


async def test_a_refused_change_set_writes_nothing(r: aioredis.Redis) -> None:
    w = ListWriter(r, P)
    await w.apply_changes([Change("add", "black", imei(1), source="f")])
    g = int(await r.hget(k_current(P), "black"))
    # The generation moves between the writer's read and its script (another writer):
    # the whole set is refused, the feed seq included.
    await w.apply_changes([Change("add", "grey", imei(1), source="f")])
    grey = int(await r.hget(k_current(P), "grey"))

    async def stale(name: str) -> int:
        await r.hset(k_current(P), "black", str(grey))
        return g

    w._ensure_generation = stale  # type: ignore[method-assign]
    before = await r.xlen(k_changes(P))
    with pytest.raises(WriterError, match="another writer"):
        await w.apply_changes([Change("add", "black", imei(2), source="f")], feed="x", feed_seq=1)
    assert await r.xlen(k_changes(P)) == before and await r.hget(k_feed(P, "x"), "seq") is None
    del w._ensure_generation
    # A pointer to a generation that does not exist: refused too.
    await r.hset(k_current(P), "black", "999")
    with pytest.raises(WriterError, match="not a ready black generation"):
        await w.apply_changes([Change("add", "black", imei(2), source="f")])
    assert await r.xlen(k_changes(P)) == before
    with pytest.raises(ValueError, match="14-digit"):
        await w.apply_changes([Change("add", "black", "123")])
    with pytest.raises(ValueError, match="imsi"):
        await w.apply_changes([Change("add", "exceptions", imei(1))])


# --- rollback ------------------------------------------------------------------------------


async def test_rollback_swaps_generations_and_rebuilds_a_stale_filter(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    v1 = write_blacklist(tmp_path / "v1.csv", [(imei(i), "a") for i in range(10)])
    g1 = (await w.import_snapshot(ListSpec(v1, "dirbs-blacklist"), "black", guards=NO_GUARDS)).generation
    await w.apply_changes([Change("add", "black", imei(500), source="feed")])  # after g1's filter was built
    v2 = write_blacklist(tmp_path / "v2.csv", [(imei(i), "b") for i in range(10, 20)])
    g2 = (await w.import_snapshot(ListSpec(v2, "dirbs-blacklist"), "black", guards=NO_GUARDS)).generation
    assert int(imei(500)) not in Bloom.load_bytes(await r.get(k_bloom(P, g1)), operator.index)

    assert await w.rollback("black") == g1
    assert await r.hget(k_current(P), "black") == str(g1).encode()
    assert await r.hget(k_previous(P), "black") == str(g2).encode()
    assert int(imei(500)) in Bloom.load_bytes(await r.get(k_bloom(P, g1)), operator.index)
    seq, gen, what = (await stream(r))[-1]
    assert (gen, what) == (g1, "black") and int((await info(r, "black"))["seq"]) == seq
    assert imei(500) in await current_entries(r, "black")
    assert await w.rollback("black") == g2  # and back again
    assert await r.hget(k_previous(P), "black") == str(g1).encode()


# --- the writer lock ------------------------------------------------------------------------


async def test_writer_lock_is_exclusive(r: aioredis.Redis) -> None:
    async with writer_lock(r, P, 1.0, holder="first") as lock:
        assert (await r.get(k_lock(P))).decode() == lock.token and lock.token.startswith("first:")
        with pytest.raises(WriterLockHeld) as exc:
            async with writer_lock(r, P, 1.0, holder="second"):
                pass
        assert exc.value.holder == lock.token and "held by first:" in str(exc.value)
        # The sync process waits instead; it gets the lock once the first lets go.
        waiter = asyncio.create_task(_hold(r, "second"))
        await asyncio.sleep(1.5)  # longer than the TTL: renewals keep it held
        assert not waiter.done()
        assert 0 < await r.pttl(k_lock(P)) <= 1000
    assert (await asyncio.wait_for(waiter, 5)).startswith("second:")
    assert await r.get(k_lock(P)) is None  # released


async def _hold(r: aioredis.Redis, holder: str) -> str:
    async with writer_lock(r, P, 1.0, wait=True, poll_s=0.05, holder=holder) as lock:
        return lock.token


async def test_a_writer_that_lost_its_lock_writes_nothing(r: aioredis.Redis, tmp_path: Path) -> None:
    with pytest.raises(WriterLockLost):
        async with writer_lock(r, P, 0.3) as lock:
            w = ListWriter(r, P, lock=lock)
            await w.apply_changes([Change("add", "black", imei(1), source="f")])
            await r.set(k_lock(P), "someone-else:1:x")  # taken over (e.g. after a long pause)
            with pytest.raises(WriterLockLost):  # the script checks the token
                await w.apply_changes([Change("add", "black", imei(2), source="f")])
            assert lock.lost
            with pytest.raises(WriterLockLost):  # and the writer refuses from then on
                await w.import_snapshot(
                    ListSpec(write_blacklist(tmp_path / "b.csv", [(imei(3), "a")]), "dirbs-blacklist"),
                    "black",
                    guards=NO_GUARDS,
                )
    assert set(await current_entries(r, "black")) == {imei(1)}
    assert await r.get(k_lock(P)) == b"someone-else:1:x"  # not released: not ours


# --- the model test -------------------------------------------------------------------------

_IMEIS = [imei(i, tac) for tac in ("35209900", "86000012") for i in (1, 2, 3, 100001)]
_IMSIS = ["00101000001", "00101000002"]
_REASONS = ["stolen", "dup"]

_import_black = st.tuples(
    st.just("import"),
    st.just("black"),
    st.lists(st.tuples(st.sampled_from(_IMEIS), st.sampled_from(_REASONS)), max_size=6),
)
_import_exc = st.tuples(
    st.just("import"),
    st.just("exceptions"),
    st.lists(st.tuples(st.sampled_from(_IMEIS), st.sampled_from(_IMSIS)), max_size=4),
)
_change = st.builds(
    lambda op, lst, i, s, reason, source: Change(op, lst, i, s if lst == "exceptions" else "", reason, source),
    st.sampled_from(["add", "remove"]),
    st.sampled_from(["black", "exceptions"]),
    st.sampled_from(_IMEIS),
    st.sampled_from(_IMSIS),
    st.sampled_from(["", *_REASONS]),
    st.sampled_from(["", "f1", "f2"]),
)
_op = st.one_of(
    _import_black,
    _import_exc,
    st.tuples(st.just("changes"), st.lists(_change, min_size=1, max_size=4)),
    st.tuples(st.just("rollback"), st.sampled_from(["black", "exceptions"])),
)

Content = dict[str, frozenset[tuple[str, str]]]


class Gen:
    """A model generation; ``pristine``: untouched by changes since it was made (so its
    digest is intact and a re-import of the same content is ``unchanged``)."""

    def __init__(self, content: Content) -> None:
        self.content = content
        self.pristine = True


def _details(content: Content) -> dict[str, set[str]]:
    return {k: {d for _, d in v} for k, v in content.items()}


class Model:
    """The lists as plain dicts: what Redis must hold after each step."""

    def __init__(self) -> None:
        self.cur: dict[str, Gen | None] = {"black": None, "exceptions": None}
        self.prev: dict[str, Gen | None] = {"black": None, "exceptions": None}

    def content(self, lst: str) -> Content:
        gen = self.cur[lst]
        return gen.content if gen is not None else {}

    def do_import(self, lst: str, content: Content) -> None:
        cur = self.cur[lst]
        if cur is not None and cur.pristine and _details(cur.content) == _details(content):
            return  # unchanged: no new generation
        self.prev[lst], self.cur[lst] = cur, Gen(content)

    def apply(self, c: Change) -> None:
        gen = self.cur[c.list]
        if gen is None:  # the writer makes an empty generation for it
            gen = self.cur[c.list] = Gen({})
        cur = dict(gen.content)
        key = f"{c.imei}/{c.imsi}" if c.list == "exceptions" else c.imei
        if c.op == "add":
            pair = (c.source, c.reason)
            cur[key] = frozenset({pair}) if c.list == "exceptions" else cur.get(key, frozenset()) | {pair}
        elif key in cur:
            if c.list == "exceptions" or not c.source:
                del cur[key]
            else:
                left = frozenset(m for m in cur[key] if not (m[0] == c.source and (not c.reason or m[1] == c.reason)))
                if left:
                    cur[key] = left
                else:
                    del cur[key]
        if cur != gen.content:
            gen.pristine = False
            gen.content = cur

    def rollback(self, lst: str) -> bool:
        if self.cur[lst] is None or self.prev[lst] is None:
            return False
        self.cur[lst], self.prev[lst] = self.prev[lst], self.cur[lst]
        return True


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for all hypothesis examples (flushed per example)."""
    require("redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis-model"))
    server.start()
    yield server
    server.stop()


_counter = itertools.count()


@pytest.mark.parametrize("atomic", [True, False], ids=["script", "log-then-apply"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=8))
def test_random_histories_match_a_model(
    shared_redis: RedisServer, tmp_path: Path, atomic: bool, ops: list[tuple[object, ...]]
) -> None:
    asyncio.run(_run_model(shared_redis.url, tmp_path, atomic, ops))


async def _run_model(url: str, tmp_path: Path, atomic: bool, ops: list[tuple[object, ...]]) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    w = ListWriter(r, P, atomic=atomic, batch_size=3)
    model = Model()
    try:
        for op in ops:
            if op[0] == "import":
                lst, rows = op[1], op[2]
                path = str(tmp_path / f"{next(_counter)}.csv")
                assert isinstance(rows, list)
                if lst == "black":
                    write_blacklist(Path(path), rows)
                    content: dict[str, set[tuple[str, str]]] = {}
                    for i, reason in rows:
                        content.setdefault(i, set()).add((path, reason))
                    spec = ListSpec(path, "dirbs-blacklist")
                else:
                    write_exceptions(Path(path), rows)
                    content = {f"{i}/{s}": {(path, "")} for i, s in rows}
                    spec = ListSpec(path, "dirbs-exceptions")
                rep = await w.import_snapshot(spec, str(lst), guards=NO_GUARDS)
                model.do_import(str(lst), {k: frozenset(v) for k, v in content.items()})
                assert rep.status in ("imported", "unchanged")
            elif op[0] == "changes":
                changes = op[1]
                assert isinstance(changes, list)
                await w.apply_changes(changes)
                for c in changes:
                    model.apply(c)
            else:
                lst = str(op[1])
                if model.rollback(lst):
                    await w.rollback(lst)
                else:
                    with pytest.raises(WriterError):
                        await w.rollback(lst)
            for lst in ("black", "exceptions"):
                assert await current_entries(r, lst) == model.content(lst), (op, lst)
                if model.cur[lst] is not None:
                    await assert_accounting(r, lst)
                    g = int(await r.hget(k_current(P), lst))
                    bloom = Bloom.load_bytes(await r.get(k_bloom(P, g)), operator.index)
                    i = await info(r, lst)
                    if int(i.get("adds", 0)) == 0:  # otherwise nodes add the changes' IMEIs themselves
                        assert all(int(k.split("/")[0]) in bloom for k in model.content(lst))
        recs = await stream(r)
        assert [s for s, _, _ in recs] == list(range(1, len(recs) + 1))
        assert (recs[-1][0] if recs else 0) == int(await r.get(k_seq(P)) or 0)
    finally:
        await r.aclose()


# --- Redis Cluster ---------------------------------------------------------------------------


class ClusterNode(RedisServer):
    """A one-node Redis Cluster owning every slot: the client follows cluster rules
    (CROSSSLOT for multi-key scripts) although every key is on one process."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # The cluster bus port defaults to port + 10000, which must exist: name a free one.
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [*super().command(), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_port)]  # fmt: skip

    def start(self) -> None:
        super().start()
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "cluster", "addslotsrange", "0", "16383"],
            check=True,
            capture_output=True,
        )
        # The slots are served once the node says cluster_state:ok; before, every command
        # gets CLUSTERDOWN (newer redis-py clients retry that, older ones do not).
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "cluster", "info"], capture_output=True, text=True, check=True
            ).stdout
            if "cluster_state:ok" in out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"one-node cluster not ok after 10 s: {out}")
            time.sleep(0.05)


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[ClusterNode]:
    require("redis-server")
    require("redis-cli")
    node = ClusterNode(tmp_path / "cluster")
    node.start()
    yield node
    node.stop()


async def test_cluster_import_changes_rollback_and_replay(cluster_node: ClusterNode, tmp_path: Path) -> None:
    rc = connect(RedisConfig(url=f"redis://127.0.0.1:{cluster_node.port}", cluster=True, prefix=P), timeout_s=10)
    assert isinstance(rc, RedisCluster)
    try:
        async with writer_lock(rc, P, 5.0) as lock:
            w = ListWriter(rc, P, lock=lock, batch_size=7)
            assert not w.atomic
            rows = [(imei(i, tac), "a") for tac in ("35209900", "86000012", "01000001") for i in range(20)]
            v1 = write_blacklist(tmp_path / "v1.csv", [*rows, (rows[0][0], "b")])
            rep = await w.import_snapshot(ListSpec(v1, "dirbs-blacklist"), "black", guards=NO_GUARDS)
            assert rep.applied and rep.count == 60 and rep.duplicates == 1
            assert (await w.import_snapshot(ListSpec(v1, "dirbs-blacklist"), "black", guards=NO_GUARDS)).status == (
                "unchanged"
            )
            await w.apply_changes([Change("add", "black", imei(99), source="f"), Change("remove", "black", imei(0))])
            await assert_accounting(rc, "black")
            v2 = write_blacklist(tmp_path / "v2.csv", rows[:50])
            rep2 = await w.import_snapshot(
                ListSpec(v2, "dirbs-blacklist"), "black", guards=GuardsConfig(min_entries_to_guard=10)
            )
            assert rep2.status == "refused" and rep2.removals == 11  # 10 rows cut, and the change's imei(99)
            rep2 = await w.import_snapshot(ListSpec(v2, "dirbs-blacklist"), "black", guards=NO_GUARDS)
            assert rep2.applied
            assert await w.rollback("black") == rep.generation

            # A crash between logging and applying: the change is in the stream only.
            async def crash(items: object) -> None:
                raise ConnectionError("writer died")

            w._apply_plain = crash  # type: ignore[method-assign]
            with pytest.raises(ConnectionError):
                await w.apply_changes([Change("add", "black", imei(77), source="f")])
            del w._apply_plain
            assert imei(77) not in await current_entries(rc, "black")  # type: ignore[arg-type]
            assert await w.replay_unapplied() >= 1
            assert imei(77) in await current_entries(rc, "black")  # type: ignore[arg-type]
            await assert_accounting(rc, "black")
            # A flip whose record was never written gets it back.
            last = (await stream(rc))[-1]
            await rc.xtrim(k_changes(P), minid=f"{last[0] + 1}-0")  # drop the stream (as if never logged)
            g = int(await rc.hget(k_current(P), "black"))
            await rc.hset(k_info(P, g), "seq", str(last[0] + 1))
            await rc.set(k_seq(P), str(last[0] + 1))
            await w.replay_unapplied()
            assert (await stream(rc))[-1] == (last[0] + 1, g, "black")
            status = await w.status()
            assert status["lists"]["black"]["current"]["generation"] == g
    finally:
        await rc.aclose()


# --- connecting ----------------------------------------------------------------------------------


def test_sentinel_urls() -> None:
    s = parse_sentinel_url("redis+sentinel://u:p%40ss@h1:26380,h2,[::1]:5000/mymaster/3")
    assert (s.hosts, s.service, s.db, s.username, s.password, s.ssl) == (
        [("h1", 26380), ("h2", 26379), ("::1", 5000)],
        "mymaster",
        3,
        "u",
        "p@ss",
        False,
    )
    assert parse_sentinel_url("rediss+sentinel://h:1/svc").ssl
    for bad in ("redis+sentinel://h1:26379", "redis+sentinel:///svc", "redis+sentinel://h:x/svc", "redis://h/0"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


async def test_connect_picks_the_client() -> None:
    single = connect(RedisConfig(url="redis://127.0.0.1:1/2"))
    assert isinstance(single, aioredis.Redis)
    assert single.connection_pool.connection_kwargs["db"] == 2
    assert single.connection_pool.connection_kwargs["socket_timeout"] == 0.05
    await single.aclose()
    sentinel = connect(RedisConfig(url="redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster"), timeout_s=3)
    assert isinstance(sentinel, aioredis.Redis)
    assert type(sentinel.connection_pool).__name__ == "SentinelConnectionPool"
    await sentinel.aclose()
    with pytest.raises(ValueError):
        connect(RedisConfig(url="redis+sentinel://h/s", cluster=True))
    with pytest.raises(ValueError):
        connect(RedisConfig(url="http://x"))
