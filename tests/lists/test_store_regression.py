"""A node never trusts a store that went backwards (redis_store's module docstring).

Each test has a real redis-server, lists written by the real ListWriter, and a
RedisLists node following them; the store is then emptied, rolled back, replaced or
damaged as a restart, a restore or a failover would, and the node must keep what it
had, say so, and never answer WHITELISTED for a listed phone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from s13eir.config import GuardsConfig
from s13eir.decision.engine import decide
from s13eir.decision.model import Facts, UnknownPolicy
from s13eir.lists import redis_layout as L
from s13eir.lists.formats import ListSpec
from s13eir.lists.redis_store import RedisLists
from s13eir.lists.store_state import StoreUnavailable
from s13eir.sync.writer import ListWriter
from tests.services import RedisServer
from tests.sync.test_redis_imports import imei, write_blacklist

P = "reg"
NO_GUARDS = GuardsConfig(min_entries_to_guard=10**9)
BLACK = [imei(i) for i in range(40)]
GREY = [imei(i, "35290611") for i in range(5)]


async def answer(node: RedisLists, imei14: str) -> tuple[str, str]:
    """(status, rule) as the node answers, with the default outage policy (last_known)."""
    facts = node.facts(imei14, None)
    if not isinstance(facts, Facts):
        try:
            facts = await node.fetch(imei14, None)
        except StoreUnavailable as e:
            if e.last_known is None:
                return "GREYLISTED", "policy"
            facts = e.last_known
    v = decide(facts, None, UnknownPolicy.WHITELISTED, imei14)
    assert v.status is not None
    return v.status.name, v.reason.rule.value


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def import_lists(r: aioredis.Redis, tmp_path: Path, *, grey: bool = True) -> None:
    w = ListWriter(r, P)
    black = write_blacklist(tmp_path / "black.csv", [(i, "stolen") for i in BLACK])
    await w.import_snapshot(ListSpec(black, "dirbs-blacklist"), "black", guards=NO_GUARDS)
    if grey:
        path = write_blacklist(tmp_path / "grey.csv", [(i, "review") for i in GREY])
        await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "grey", guards=NO_GUARDS)


async def started(url: str, prefix: str = P) -> RedisLists:
    node = RedisLists(aioredis.Redis.from_url(url), prefix, timeout_s=0.5)
    await node.start()
    return node


async def test_node_started_on_an_empty_store_is_not_ready(redis_server: RedisServer, r: aioredis.Redis,
                                                           tmp_path: Path) -> None:  # fmt: skip
    node = await started(redis_server.url)
    try:
        ok, why = node.ready()
        assert not ok and node.state() == "empty"
        assert f"no lists in Redis under prefix {P!r}" in why, why
        await import_lists(r, tmp_path)
        await until(lambda: node.ready()[0], "the node did not load the lists once they were imported")
        assert await answer(node, BLACK[0]) == ("BLACKLISTED", "imei")
    finally:
        await node.stop()


async def test_a_mistyped_prefix_is_not_ready_and_named(redis_server: RedisServer, r: aioredis.Redis,
                                                        tmp_path: Path) -> None:  # fmt: skip
    await import_lists(r, tmp_path)
    node = await started(redis_server.url, prefix="s13eri")
    try:
        ok, why = node.ready()
        assert not ok and "prefix 's13eri'" in why, why
    finally:
        await node.stop()


async def test_redis_restarted_empty_keeps_the_lists(redis_server: RedisServer, r: aioredis.Redis,
                                                     tmp_path: Path) -> None:  # fmt: skip
    await import_lists(r, tmp_path)
    node = await started(redis_server.url)
    try:
        assert node.ready() == (True, "ready")
        assert await answer(node, BLACK[0]) == ("BLACKLISTED", "imei")  # confirmed: cached here
        redis_server.restart()  # no persistence: every key is gone
        await until(lambda: node.state() == "regressed", "the empty store was not noticed")
        ok, why = node.ready()
        assert not ok and "the store is empty" in why and "black, grey" in why, why
        assert node.stats.regressions == 1
        # Kept: the Bloom filters and the cache. Confirmed phones keep their answer; the
        # others get the outage policy, never WHITELISTED; phones on no list are unaffected.
        assert await answer(node, BLACK[0]) == ("BLACKLISTED", "imei")
        for i in [*BLACK[1:], *GREY]:
            assert (await answer(node, i))[0] != "WHITELISTED", i
        assert await answer(node, imei(999, "35450712")) == ("WHITELISTED", "policy")
        # Re-importing one list is not enough: the node read grey too.
        await import_lists(r, tmp_path, grey=False)
        await asyncio.sleep(1.5)
        ok, why = node.ready()
        assert not ok and "lacks the grey list" in why, why
        path = write_blacklist(tmp_path / "grey.csv", [(i, "review") for i in GREY])
        await ListWriter(r, P).import_snapshot(ListSpec(path, "dirbs-blacklist"), "grey", guards=NO_GUARDS)
        await until(lambda: node.ready()[0], "the node did not recover once every list was back")
        assert await answer(node, BLACK[5]) == ("BLACKLISTED", "imei")
        assert await answer(node, GREY[1]) == ("GREYLISTED", "imei")
    finally:
        await node.stop()


async def test_sequence_going_back_is_a_regression(redis_server: RedisServer, r: aioredis.Redis,
                                                   tmp_path: Path) -> None:  # fmt: skip
    await import_lists(r, tmp_path)
    node = await started(redis_server.url)
    try:
        seq = node.seq
        assert seq >= 2
        await r.set(L.k_seq(P), 0)  # as a restored dump or a replica that lost writes
        await until(lambda: node.state() == "regressed", "a sequence going back was not noticed")
        assert f"went back from {seq} to 0" in node.ready()[1]
        for i in BLACK[:5]:
            assert (await answer(node, i))[0] != "WHITELISTED", i
        await r.set(L.k_seq(P), seq)
        await until(lambda: node.ready()[0], "the node did not recover")
    finally:
        await node.stop()


async def test_a_vanished_generation_is_a_regression(redis_server: RedisServer, r: aioredis.Redis,
                                                     tmp_path: Path) -> None:  # fmt: skip
    await import_lists(r, tmp_path)
    node = await started(redis_server.url)
    try:
        gen = int(await r.hget(L.k_current(P), "black"))
        await r.delete(L.k_info(P, gen))  # a partial restore, or deleted by hand
        await r.hset(L.k_current(P), "black", gen + 1000)  # and the pointer moved with no record
        await until(lambda: node.state() == "regressed", "a vanished generation was not noticed")
        assert "black generation" in node.ready()[1]
        assert (await answer(node, BLACK[3]))[0] != "WHITELISTED"
    finally:
        await node.stop()


async def test_epoch_is_written_once_and_carried_by_generations(r: aioredis.Redis, tmp_path: Path) -> None:
    await import_lists(r, tmp_path)
    epoch = (await r.get(L.k_epoch(P))).decode()
    await import_lists(r, tmp_path)  # later imports keep it
    assert (await r.get(L.k_epoch(P))).decode() == epoch
    for name in ("black", "grey"):
        gen = int(await r.hget(L.k_current(P), name))
        assert (await r.hget(L.k_info(P, gen), "epoch")).decode() == epoch


async def test_a_replaced_store_with_every_list_is_accepted(redis_server: RedisServer, r: aioredis.Redis,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A deliberate re-import after a loss (new epoch, all lists back) is the recovery path."""
    await import_lists(r, tmp_path)
    node = await started(redis_server.url)
    try:
        old = node.epoch
        await r.flushall()
        await import_lists(r, tmp_path)
        await until(lambda: node.epoch not in (None, old) and node.ready()[0], "the new store was not taken")
        assert node.stats.regressions <= 1  # seen empty in between, or not at all
        assert await answer(node, BLACK[7]) == ("BLACKLISTED", "imei")
    finally:
        await node.stop()


async def test_a_lookup_on_a_store_that_lost_its_data_is_not_a_miss(redis_server: RedisServer, r: aioredis.Redis,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    """Between a restart without persistence and the follower noticing, a confirmation
    must not read "not listed" from the empty server: the lookup checks the epoch."""
    await import_lists(r, tmp_path)
    node = await started(redis_server.url)
    try:
        await r.flushall()  # the follower is blocked in XREAD and has not looked yet
        for i in BLACK[10:20]:
            assert (await answer(node, i))[0] != "WHITELISTED", i
    finally:
        await node.stop()
