"""An EIR node reading its lists from a real redis-server: Bloom pre-check, batched
confirmation, the change stream, and Redis going away."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from typing import Any

import redis
import redis.asyncio as aioredis

from s13eir.client import S13Client
from s13eir.config_loading import config_from_mapping
from s13eir.lists import redis_layout as L
from s13eir.lists.redis_store import RedisLists
from tests.conftest import MME_HOST, MME_REALM, RunningNode, node_config, running_node
from tests.redis_seed import append_change, seed_list
from tests.services import RedisServer

BLACK = "35209900176148"
GREY = "35290611000001"
UNLISTED = "35450712345675"


def redis_config(server: RedisServer, **policy: Any) -> dict[str, Any]:
    return node_config(
        store={"backend": "redis", "lists": [], "redis": {"url": server.url, "timeout_ms": 200}},
        policy=policy,
    )


def seed(server: RedisServer) -> redis.Redis:
    r = redis.Redis.from_url(server.url)
    seed_list(r, "black", [(BLACK, "stolen"), ("35209900176155", "stolen")])
    seed_list(r, "grey", [(GREY, "under review")])
    seed_list(r, "exceptions", [(BLACK, "001010000000001")])
    return r


async def verdicts(rn: RunningNode, queries: list[tuple[str, str | None]]) -> list[str]:
    c = S13Client(MME_HOST, MME_REALM)
    await c.connect(rn.host, rn.port)
    try:
        return [(await c.check(imei, imsi)).verdict for imei, imsi in queries]
    finally:
        await c.disconnect()


async def readyz(rn: RunningNode) -> int:
    return await asyncio.to_thread(_readyz, rn)


async def readyz_body(rn: RunningNode) -> tuple[int, str]:
    return await asyncio.to_thread(_readyz_body, rn)


def _readyz_body(rn: RunningNode) -> tuple[int, str]:
    port = next(p for t, _, p in rn.node.bound if t == "http")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def _readyz(rn: RunningNode) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rn.http_port}/readyz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def test_lists_from_redis(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        store = rn.node.redis_lists
        assert store is not None
        got = await verdicts(rn, [(BLACK, None), (BLACK, "001010000000001"), (GREY, None), (UNLISTED, None)])
        assert got == ["BLACKLISTED", "WHITELISTED", "GREYLISTED", "WHITELISTED"]
        lookups = store.stats.remote_lookups
        # A phone on no list is answered without any Redis round trip.
        assert await verdicts(rn, [(UNLISTED, None)] * 20) == ["WHITELISTED"] * 20
        assert store.stats.remote_lookups == lookups
        assert await readyz(rn) == 200


def script_calls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")  # type: ignore[assignment]
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def test_many_concurrent_positives_share_round_trips(redis_server: RedisServer) -> None:
    r = seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        store = rn.node.redis_lists
        assert store is not None
        store.cache_entries = 0  # every positive goes to Redis
        before = script_calls(r)
        c = S13Client(MME_HOST, MME_REALM)
        await c.connect(rn.host, rn.port)
        try:
            reqs = [c.ecr(BLACK if i % 2 else GREY) for i in range(200)]
            c.send(*reqs)  # one burst, as an MME under load
            answers = [await c.request_answer(r.header.hop_by_hop_identifier) for r in reqs]
        finally:
            await c.disconnect()
        assert [a.equipment_status for a in answers] == [1 if i % 2 else 2 for i in range(200)]
        assert store.stats.remote_lookups == 200
        # Lookups of a loop turn share one round trip (one script call, counted by Redis).
        calls = script_calls(r) - before
        assert 0 < calls < 50, calls


async def test_change_stream_reaches_the_node_within_a_second(redis_server: RedisServer) -> None:
    r = seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        assert await verdicts(rn, [(UNLISTED, None)]) == ["WHITELISTED"]
        append_change(r, L.Change("add", "black", UNLISTED, reason="stolen", source="feed"))
        deadline = time.monotonic() + 1.0
        while (await verdicts(rn, [(UNLISTED, None)]))[0] != "BLACKLISTED":
            assert time.monotonic() < deadline, "the change did not reach the node within 1 s"
            await asyncio.sleep(0.02)
        append_change(r, L.Change("remove", "black", UNLISTED, source="feed"))
        deadline = time.monotonic() + 1.0
        while (await verdicts(rn, [(UNLISTED, None)]))[0] != "WHITELISTED":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)


async def test_redis_down_negatives_answered_positives_per_policy(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        # Confirm BLACK once so that its last known state is cached here.
        assert await verdicts(rn, [(BLACK, None)]) == ["BLACKLISTED"]
        redis_server.kill()
        t0 = time.monotonic()
        got = await verdicts(rn, [(UNLISTED, None), (BLACK, None), ("35209900176155", None)])
        assert time.monotonic() - t0 < 5  # bounded by the lookup timeout, no hang
        # On no list: no Redis needed. BLACK: last known. The other listed IMEI: greylisted.
        assert got == ["WHITELISTED", "BLACKLISTED", "GREYLISTED"]
        # Degraded but ready: every node of the site shares this Redis (README: Outages).
        status, body = await readyz_body(rn)
        assert status == 200 and body.startswith("degraded: Redis unavailable"), body
        assert rn.node.redis_lists is not None and rn.node.redis_lists.state() == "unavailable"
        redis_server.start()  # a fresh server without persistence: the lists are gone
        deadline = time.monotonic() + 10
        while (await readyz_body(rn))[0] != 503:
            assert time.monotonic() < deadline, "an empty store was not noticed"
            await asyncio.sleep(0.1)
        assert "store regressed: the store is empty" in (await readyz_body(rn))[1]
        # The node keeps what it had: still never WHITELISTED for the listed phones.
        assert await verdicts(rn, [(UNLISTED, None), (BLACK, None), ("35209900176155", None)]) == [
            "WHITELISTED", "BLACKLISTED", "GREYLISTED"
        ]  # fmt: skip
        seed(redis_server)  # the writer re-imports
        deadline = time.monotonic() + 10
        while await readyz(rn) != 200:
            assert time.monotonic() < deadline, "the node did not recover when the lists came back"
            await asyncio.sleep(0.1)
        assert await verdicts(rn, [("35209900176155", None)]) == ["BLACKLISTED"]


async def test_redis_down_too_busy_policy(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server, store_unavailable="too_busy"))) as rn:
        redis_server.kill()
        c = S13Client(MME_HOST, MME_REALM)
        await c.connect(rn.host, rn.port)
        try:
            ok = await c.check(UNLISTED)
            busy = await c.check(BLACK)
        finally:
            await c.disconnect()
        assert ok.verdict == "WHITELISTED"
        assert busy.result_code == 3004 and busy.e_bit


async def test_n5g_eir_from_redis_agrees_with_s13(redis_server: RedisServer) -> None:
    from tests.sbi_helpers import h2_client

    seed(redis_server)
    cfg = redis_config(redis_server)
    cfg["sbi"] = {"address": "127.0.0.1", "port": 0}
    async with running_node(config_from_mapping(cfg)) as rn:
        port = next(p for t, _, p in rn.node.bound if t == "sbi")
        s13 = await verdicts(rn, [(BLACK, None), (BLACK, "001010000000001"), (GREY, None), (UNLISTED, None)])
        async with h2_client(f"http://127.0.0.1:{port}") as http:
            sbi = []
            for imei, supi in ((BLACK, None), (BLACK, "imsi-001010000000001"), (GREY, None), (UNLISTED, None)):
                params = {"pei": f"imei-{imei}0", **({"supi": supi} if supi else {})}
                r = await http.get("/n5g-eir-eic/v1/equipment-status", params=params)
                assert r.status_code == 200, r.text
                sbi.append(r.json()["status"])
        assert sbi == s13 == ["BLACKLISTED", "WHITELISTED", "GREYLISTED", "WHITELISTED"]


async def test_node_started_after_changes_sees_them(redis_server: RedisServer) -> None:
    """The saved Bloom filter covers the generation as imported; IMEIs added after that
    must reach a node that starts later (replayed from the change stream)."""
    r = seed(redis_server)
    append_change(r, L.Change("add", "black", UNLISTED, reason="stolen", source="feed"))
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        assert await verdicts(rn, [(UNLISTED, None), (BLACK, None)]) == ["BLACKLISTED", "BLACKLISTED"]
    # With the stream trimmed past the import, the node rebuilds the filter by scanning.
    r.xtrim(L.k_changes("s13eir"), maxlen=0)
    append_change(r, L.Change("add", "grey", "35450712345676", reason="review", source="feed"))
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        assert await verdicts(rn, [(UNLISTED, None), ("35450712345676", None)]) == ["BLACKLISTED", "GREYLISTED"]


async def test_batched_confirmation_agrees_with_the_layout(redis_server: RedisServer) -> None:
    """The lookup script builds bucket keys and fields from the IMEIs itself: check it, and
    the pipelined path used on a Cluster, against the layout's own key functions, with
    IMEIs whose bucket or field has leading zeros, exception pairs and IMSI-less queries."""
    rng = random.Random(7)
    edge = {"00000000000000", "00000000100000", "00000000012345", "12345678900001", "00000001000010",
            "99999999999999", "00000000099999", "35209900176148"}  # fmt: skip
    imeis = sorted(edge | {f"{rng.randrange(10**14):014d}" for _ in range(300)})
    black, grey = imeis[::2], imeis[1::3]
    pairs = {(imei, f"00101{k:010d}") for k, imei in enumerate(imeis[::5])}
    r = redis.Redis.from_url(redis_server.url)
    seed_list(r, "black", [(i, "stolen") for i in black])
    seed_list(r, "grey", [(i, "review") for i in grey])
    seed_list(r, "exceptions", sorted(pairs))
    queries: list[tuple[str, str | None]] = [(i, None) for i in imeis]
    queries += sorted(pairs) + [(i, "001019999999999") for i in imeis[::7]]
    for scripted in (True, False):
        store = RedisLists(aioredis.Redis.from_url(redis_server.url), "s13eir", timeout_s=5)
        await store.start()
        try:
            if not scripted:
                store._confirm_script = None  # the Cluster path: a pipeline of HGETs
            got = await asyncio.gather(*(store.fetch(i, imsi) for i, imsi in queries))
        finally:
            await store.stop()
        for (imei, imsi), facts in zip(queries, got, strict=True):
            kinds = sorted(e.list.value for e in facts.imei)
            want = sorted(["black"] * (imei in black) + ["grey"] * (imei in grey))
            assert kinds == want, (scripted, imei)
            assert (facts.exception is not None) == ((imei, imsi) in pairs), (scripted, imei, imsi)
            assert all(e.key == imei and e.source == "test-feed" for e in facts.imei)


async def test_entries_added_after_start_carry_their_source_and_reason(redis_server: RedisServer) -> None:
    """A delta can reference a metadata id the node did not load at start: the node fetches
    it with the lookup, so the entry carries the delta's source and reason (what the verdict
    log and the sighting events report), not placeholders."""
    r = seed(redis_server)
    store = RedisLists(aioredis.Redis.from_url(redis_server.url), "s13eir", timeout_s=5)
    await store.start()
    try:
        append_change(r, L.Change("add", "black", UNLISTED, reason="reported stolen at the counter", source="shop-7"))
        append_change(r, L.Change("add", "exceptions", BLACK, imsi="001010000000002", source="court-order"))
        facts = await store.fetch(UNLISTED, None)  # a confirmation always asks Redis
        assert [(e.list.value, e.source, e.detail) for e in facts.imei] == [
            ("black", "shop-7", "reported stolen at the counter")
        ]
        pair = await store.fetch(BLACK, "001010000000002")
        assert pair.exception is not None and pair.exception.source == "court-order"
        assert [e.source for e in pair.imei] == ["test-feed"]  # loaded at start
    finally:
        await store.stop()


async def test_live_adds_to_lists_of_different_sizes_reach_the_node(redis_server: RedisServer) -> None:
    """Regression: a live add compared rbloom filters with ==, which raises ValueError for
    filters of different sizes; the change follower died and the black add after a grey add
    was answered WHITELISTED for good, while /readyz stayed 200."""
    r = redis.Redis.from_url(redis_server.url)
    seed_list(r, "black", [(f"35209901{i:06d}", "stolen") for i in range(500)])
    seed_list(r, "grey", [(f"35290612{i:06d}", "review") for i in range(3)])
    new_grey, new_black = "35441208700018", "35332011045072"
    async with running_node(config_from_mapping(redis_config(redis_server))) as rn:
        assert await verdicts(rn, [(new_grey, None), (new_black, None)]) == ["WHITELISTED", "WHITELISTED"]
        append_change(r, L.Change("add", "grey", new_grey, reason="review", source="feed"))
        append_change(r, L.Change("add", "black", new_black, reason="stolen", source="feed"))
        deadline = time.monotonic() + 5.0
        while (got := await verdicts(rn, [(new_grey, None), (new_black, None)])) != ["GREYLISTED", "BLACKLISTED"]:
            assert time.monotonic() < deadline, f"the live adds did not reach the node: {got}"
            await asyncio.sleep(0.05)
        store = rn.node.redis_lists
        assert store is not None and store.stats.follower_failures == 0
        # The follower still moves: one more add gets through.
        append_change(r, L.Change("add", "black", UNLISTED, reason="stolen", source="feed"))
        deadline = time.monotonic() + 5.0
        while (await verdicts(rn, [(UNLISTED, None)]))[0] != "BLACKLISTED":
            assert time.monotonic() < deadline, "the follower stopped after the live adds"
            await asyncio.sleep(0.05)
        assert await readyz(rn) == 200


async def written_late_and_found(r: redis.Redis, node: RedisLists, imei: str) -> None:
    """Write an add the Cluster way's second step (after its record), then check that the
    node's filter holds it and a lookup finds it on the blacklist."""
    gen = int(r.hget(L.k_current("s13eir"), "black") or 0)
    r.hset(L.k_meta("s13eir", gen), "977", L.encode_meta("black", "feed", "stolen"))
    r.hset(L.k_imei_bucket("s13eir", gen, int(imei)), L.imei_field(int(imei)), "977")
    assert int(imei) in node._lists["black"].bloom  # type: ignore[operator]
    facts = await node.fetch(imei, None)
    assert facts.imei and facts.imei[0].list.value == "black"


async def test_an_add_during_a_bloom_rebuild_is_not_lost(redis_server: RedisServer) -> None:
    """The rebuild scans Redis while the stream goes on: an IMEI added meanwhile (here logged
    before it is written, as a Cluster writer does) must be in the filter swapped in."""
    r = redis.Redis.from_url(redis_server.url)
    listed = [f"352099001{i:05d}" for i in range(10)]
    seed_list(r, "black", [(i, "stolen") for i in listed])
    node = RedisLists(aioredis.Redis.from_url(redis_server.url), "s13eir", timeout_s=1.0, rebuild_after_removals=0.2)
    await node.start()
    try:
        new = "35209900199999"
        for i in listed[:3]:  # 3 removals of 10: past the threshold, a rebuild starts
            append_change(r, L.Change("remove", "black", i))
        seq = append_change(r, L.Change("add", "black", new, reason="stolen", source="feed"), apply=False)
        deadline = time.monotonic() + 5
        while node.seq < seq or node._rebuilding:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert node.stats.changes_applied == 4
        # Only now is the add written (the writer's second step); the node's filter has it.
        await written_late_and_found(r, node, new)
    finally:
        await node.stop()


async def test_busy_answers_and_latency_are_counted_per_answer(redis_server: RedisServer) -> None:
    """Past diameter.max_in_flight_per_peer a request gets 3004, counted in
    s13eir_busy_answers_total; the latency histogram has one observation per answer
    given at once."""
    seed(redis_server)
    cfg = redis_config(redis_server)
    cfg["diameter"] = {"max_in_flight_per_peer": 4}
    async with running_node(config_from_mapping(cfg)) as rn:
        c = S13Client(MME_HOST, MME_REALM)
        await c.connect(rn.host, rn.port)
        try:
            before = rn.node.metrics.latency_count
            reqs = [c.ecr(BLACK) for _ in range(40)] + [c.ecr(UNLISTED) for _ in range(10)]
            c.send(*reqs)  # one burst: 40 lookups at once
            answers = [await c.request_answer(r.header.hop_by_hop_identifier) for r in reqs]
        finally:
            await c.disconnect()
        busy = sum(1 for a in answers if a.result_code == 3004)
        looked_up = sum(1 for a in answers if a.result_code == 2001 and a.equipment_status == 1)
        assert busy >= 30  # 4 lookups at a time; the rest refused while they run (the cap is per peer)
        assert rn.node.metrics.requests_rejected_busy == busy
        # One observation per answer given at once; the lookups' answers are not in it.
        assert rn.node.metrics.latency_count - before == len(answers) - looked_up


async def test_a_reload_during_a_bloom_rebuild_keeps_what_it_loaded(redis_server: RedisServer) -> None:
    """A gap in the change stream re-reads every list while a rebuild still scans: the
    rebuild's filter, scanned before an add that the re-read picked up, must not replace
    the re-read one (the state machine's long run answered such an IMEI from its TAC rule
    alone, as a Bloom negative)."""
    r = redis.Redis.from_url(redis_server.url)
    listed = [f"352099001{i:05d}" for i in range(10)]
    seed_list(r, "black", [(i, "stolen") for i in listed])
    node = RedisLists(aioredis.Redis.from_url(redis_server.url), "s13eir", timeout_s=1.0, rebuild_after_removals=0.2)
    scanned, release = asyncio.Event(), asyncio.Event()
    scan = node._scan_bloom

    async def held_scan(name: str, gen: int, count: int) -> Any:
        bloom = await scan(name, gen, count)
        if not scanned.is_set():  # the rebuild's scan: done, held before its swap
            scanned.set()
            await release.wait()
        return bloom

    node._scan_bloom = held_scan  # type: ignore[method-assign]
    await node.start()
    try:
        for i in listed[:3]:  # 3 removals of 10: past the threshold, a rebuild starts
            append_change(r, L.Change("remove", "black", i))
        await asyncio.wait_for(scanned.wait(), 5)
        new = "35209900199999"
        r.incr(L.k_seq("s13eir"))  # a change the stream lost: the node sees a gap and re-reads
        seq = append_change(r, L.Change("add", "black", new, reason="stolen", source="feed"))
        deadline = time.monotonic() + 5
        while node.seq < seq:
            assert time.monotonic() < deadline, "the node did not re-read the store"
            await asyncio.sleep(0.01)
        assert node.stats.reloads == 2
        release.set()
        while node._rebuilding:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert int(new) in node._lists["black"].bloom  # type: ignore[operator]
        facts = await node.fetch(new, None)
        assert facts.imei and facts.imei[0].list.value == "black"
    finally:
        await node.stop()


async def test_an_add_logged_just_before_a_rebuild_starts_is_not_lost(redis_server: RedisServer) -> None:
    """A Cluster writer logs a whole slice, then writes it: the node puts an add of the slice
    in its filter, a removal later in the same slice starts a rebuild, and the rebuild's scan
    runs before the add is written. The filter swapped in must still hold the add (the long
    state-machine run on a Cluster answered such a greylisted IMEI WHITELISTED)."""
    r = redis.Redis.from_url(redis_server.url)
    listed = [f"352099001{i:05d}" for i in range(10)]
    seed_list(r, "black", [(i, "stolen") for i in listed])
    node = RedisLists(aioredis.Redis.from_url(redis_server.url), "s13eir", timeout_s=1.0, rebuild_after_removals=0.2)
    await node.start()
    try:
        new = "35209900199999"
        append_change(r, L.Change("add", "black", new, reason="stolen", source="feed"), apply=False)
        for i in listed[:3]:  # the rest of the slice: 3 removals of 10 start a rebuild
            seq = append_change(r, L.Change("remove", "black", i))
        deadline = time.monotonic() + 5
        while node.seq < seq or node._rebuilding:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert node.stats.changes_applied == 4
        # Only now is the add written (the writer's second step); the node's filter has it.
        await written_late_and_found(r, node, new)
    finally:
        await node.stop()
