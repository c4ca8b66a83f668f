"""The MQTT change feed against a real mosquitto and a real Redis, through the real ListWriter:
exactly once by seq, duplicates, rejects, gaps and resyncs, acknowledgement after the apply,
a broker restart in the middle of a burst, and the ``s13eir sync`` process (start-up imports,
writer lock hand-over, lock loss)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
import yaml

from s13eir.backends.redis_client import AnyRedis, connect
from s13eir.config import Config, MqttSyncConfig, RedisConfig
from s13eir.config_loading import config_from_mapping
from s13eir.lists.redis_layout import BUCKET, LISTS, Change, k_changes, k_current, k_feed, k_lock
from s13eir.sync.changeset import encode_changeset
from s13eir.sync.mqtt_feed import MqttFeed, read_feed_seq
from s13eir.sync.process import EXIT_FAILURE, EXIT_OK, SyncProcess, k_sync_snapshots
from s13eir.sync.writer import ListWriter
from tests.services import MosquittoBroker, RedisServer

PREFIX = "feedtest"
TOPIC = "test/ceir/changes"
FEED = "ceir"
IMSI = "001010123456789"


@pytest.fixture
def broker(mqtt_broker: MosquittoBroker) -> MosquittoBroker:
    return mqtt_broker  # the shared fixture in conftest.py


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[AnyRedis]:
    r = connect(RedisConfig(url=redis_server.url, prefix=PREFIX), timeout_s=10)
    try:
        yield r
    finally:
        await r.aclose()


def mqtt_cfg(broker: MosquittoBroker, client_id: str = "s13eir-sync-test") -> MqttSyncConfig:
    return MqttSyncConfig(url=broker.url, topic=TOPIC, client_id=client_id, feed=FEED)


def imei(i: int) -> str:
    return f"35209900{i:06d}"


def add(list_name: str, i: int, imsi: str = "", reason: str = "") -> Change:
    return Change("add", list_name, imei(i), imsi, reason, FEED)  # type: ignore[arg-type]


def remove(list_name: str, i: int, imsi: str = "") -> Change:
    return Change("remove", list_name, imei(i), imsi, "", "")  # type: ignore[arg-type]


def msg(seq: int, *changes: Change) -> bytes:
    return encode_changeset(seq, list(changes), feed=FEED)


async def publish(broker: MosquittoBroker, *payloads: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ceir-publisher", timeout=5) as c:
        for p in payloads:
            await c.publish(TOPIC, p, qos=1)


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}") from None


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else value or ""


async def read_lists(r: AnyRedis, prefix: str = PREFIX) -> dict[str, set[str]]:
    """Every entry of every list's current generation, read from the Redis layout:
    ``imei`` for black/grey/white, ``imei/imsi`` for exceptions."""
    out: dict[str, set[str]] = {}
    for name in LISTS:
        raw = await r.hget(k_current(prefix), name)
        out[name] = set()
        if raw is None:
            continue
        kind = "x" if name == "exceptions" else "e"
        async for key in r.scan_iter(match=f"{prefix}:g:{int(raw)}:{kind}:*", count=1000):
            bucket = int(_text(key).rsplit(":", 1)[1])
            for fld in await r.hkeys(key):
                low, _, imsi = _text(fld).partition(":")
                key14 = f"{bucket * BUCKET + int(low):014d}"
                out[name].add(f"{key14}/{imsi}" if imsi else key14)
    return out


async def logged_changes(r: AnyRedis, prefix: str = PREFIX) -> list[dict[str, str]]:
    """The add/remove records of the change stream (not the generation records)."""
    entries = await r.xrange(k_changes(prefix)) or []
    records = [{_text(k): _text(v) for k, v in (fields or {}).items()} for _, fields in entries]
    return [rec for rec in records if rec["op"] in ("add", "remove")]


def model(changes: Sequence[Change]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {name: set() for name in LISTS}
    for c in changes:
        key = f"{c.imei}/{c.imsi}" if c.list == "exceptions" else c.imei
        if c.op == "add":
            out[c.list].add(key)
        else:
            out[c.list].discard(key)
    return out


class Feed:
    """An MqttFeed running in a task, with a counting resync callback."""

    def __init__(self, broker: MosquittoBroker, r: AnyRedis, writer: Any = None, client_id: str = "s13eir-sync-test"):
        self.resyncs = 0
        self.writer = writer or ListWriter(r, PREFIX)
        self.feed = MqttFeed(mqtt_cfg(broker, client_id), self.writer, r, PREFIX, self._resync,
                             backoff_min_s=0.05, backoff_max_s=0.5)  # fmt: skip
        self.task: asyncio.Task[None] | None = None

    async def _resync(self) -> None:
        self.resyncs += 1

    async def __aenter__(self) -> MqttFeed:
        self.task = asyncio.create_task(self.feed.run())
        await asyncio.wait_for(self.feed.subscribed.wait(), 10)
        return self.feed

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# -- the feed ---------------------------------------------------------------------------------


async def test_change_sets_are_applied_exactly_once_in_order(broker: MosquittoBroker, redis: AnyRedis) -> None:
    s1 = (add("black", 1, reason="stolen"), add("grey", 2), add("white", 3))
    s2 = (remove("grey", 2), add("exceptions", 1, IMSI))
    s3 = (add("black", 4), remove("white", 3))
    f = Feed(broker, redis)
    async with f as feed:
        await publish(broker, msg(1, *s1), msg(2, *s2), msg(2, *s2), msg(1, *s1), msg(3, *s3), msg(3, *s3))
        await wait_for(lambda: feed.stats.duplicates == 3, what="3 duplicates")
        assert feed.stats.applied == 3 and feed.stats.last_seq == 3
        assert feed.stats.gaps == feed.stats.rejected == f.resyncs == 0
        assert f.task is not None and not f.task.done()

    assert await read_lists(redis) == model(s1 + s2 + s3)
    assert await read_feed_seq(redis, PREFIX, FEED) == 3
    logged = await logged_changes(redis)
    assert [(x["op"], x["list"], x["imei"]) for x in logged] == [(c.op, c.list, c.imei) for c in s1 + s2 + s3]
    assert logged[0]["reason"] == "stolen" and logged[0]["source"] == FEED


async def test_bad_messages_are_counted_and_skipped_and_a_gap_resyncs(broker: MosquittoBroker, redis: AnyRedis) -> None:
    f = Feed(broker, redis)
    async with f as feed:
        await publish(
            broker,
            msg(1, add("black", 1)),
            b"{not json",
            b'{"seq": 2, "changes": [{"op": "add", "list": "exceptions", "imei": "35209900000002"}]}',  # no imsi
            b'{"seq": 2, "changes": [], "colour": "blue"}',  # unknown field
        )
        await wait_for(lambda: feed.stats.rejected == 3, what="3 rejected")
        assert f.task is not None and not f.task.done()  # alive
        assert await read_feed_seq(redis, PREFIX, FEED) == 1  # nothing of the bad ones applied

        # The refused seq 2 leaves a hole: seq 3 is a gap -> resync, baseline 2, then applied.
        await publish(broker, msg(3, add("grey", 3)))
        await wait_for(lambda: feed.stats.last_seq == 3, what="seq 3 applied")
        assert (feed.stats.gaps, feed.stats.resyncs, f.resyncs) == (1, 1, 1)
        # Messages after the gap flow normally.
        await publish(broker, msg(4, add("white", 4)), msg(4, add("white", 4)))
        await wait_for(lambda: feed.stats.duplicates == 1, what="duplicate of 4")
        assert (feed.stats.applied, feed.stats.gaps, f.resyncs) == (3, 1, 1)

    assert await read_lists(redis) == model([add("black", 1), add("grey", 3), add("white", 4)])
    assert await read_feed_seq(redis, PREFIX, FEED) == 4
    assert len(await logged_changes(redis)) == 3


async def test_a_fresh_feed_starting_past_1_resyncs_first(broker: MosquittoBroker, redis: AnyRedis) -> None:
    f = Feed(broker, redis)
    async with f as feed:
        await publish(broker, msg(500, add("black", 1)), msg(501, add("black", 2)))
        await wait_for(lambda: feed.stats.last_seq == 501)
    assert (feed.stats.gaps, f.resyncs, feed.stats.applied) == (1, 1, 2)
    assert await read_feed_seq(redis, PREFIX, FEED) == 501


async def test_a_fresh_feed_refuses_an_absurd_first_seq(broker: MosquittoBroker, redis: AnyRedis) -> None:
    """No baseline (a new feed, or Redis lost it): one message must not set it anywhere."""
    f = Feed(broker, redis)
    async with f as feed:
        await publish(broker, msg(9_000_000_000_000_000_000, add("black", 1)), msg(3, add("black", 2)))
        await wait_for(lambda: feed.stats.last_seq == 3)
    assert (feed.stats.implausible, feed.stats.gaps, f.resyncs, feed.stats.applied) == (1, 1, 1, 1)
    assert await read_feed_seq(redis, PREFIX, FEED) == 3


class CrashAfterApply:
    """A writer that dies right after applying ``seq`` (before the PUBACK can be sent)."""

    def __init__(self, writer: ListWriter, seq: int) -> None:
        self.writer = writer
        self.seq = seq

    async def apply_changes(self, changes: Sequence[Change], *, feed: str | None, feed_seq: int | None) -> int:
        out = await self.writer.apply_changes(changes, feed=feed, feed_seq=feed_seq)
        if feed_seq == self.seq:
            raise RuntimeError("crash between the apply and the acknowledgement")
        return out


async def test_the_ack_follows_the_apply_and_a_redelivery_is_a_duplicate(
    broker: MosquittoBroker, redis: AnyRedis
) -> None:
    writer = ListWriter(redis, PREFIX)
    crashing = Feed(broker, redis, CrashAfterApply(writer, 2))
    async with crashing as feed:
        await publish(broker, msg(1, add("black", 1)), msg(2, add("black", 2)), msg(3, add("black", 3)))
        assert crashing.task is not None
        await asyncio.wait_for(asyncio.gather(crashing.task, return_exceptions=True), 10)
        assert isinstance(crashing.task.exception(), RuntimeError)
        assert feed.stats.last_seq == 1  # 2 was written to Redis, but the feed died before acknowledging it
    assert await read_feed_seq(redis, PREFIX, FEED) == 2

    # The same session again: the broker redelivers 2 (never acknowledged) and then 3.
    again = Feed(broker, redis, writer)
    async with again as feed:
        await wait_for(lambda: feed.stats.last_seq == 3, what="seq 3")
        assert (feed.stats.duplicates, feed.stats.applied, feed.stats.gaps) == (1, 1, 0)
    assert len(await logged_changes(redis)) == 3  # 2 was not applied twice
    assert await read_lists(redis) == model([add("black", 1), add("black", 2), add("black", 3)])


async def test_no_change_lost_or_doubled_across_a_broker_restart(broker: MosquittoBroker, redis: AnyRedis) -> None:
    rng = random.Random(1234)
    sets: list[tuple[Change, ...]] = []
    for _ in range(300):
        changes: list[Change] = []
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(LISTS)
            i = rng.randrange(40)
            imsi = rng.choice([IMSI, "00101999"]) if name == "exceptions" else ""
            changes.append(add(name, i, imsi) if rng.random() < 0.6 else remove(name, i, imsi))
        sets.append(tuple(changes))
    payloads = [msg(seq, *changes) for seq, changes in enumerate(sets, 1)]
    expected = model([c for s in sets for c in s])

    acked = 0
    halfway = asyncio.Event()

    async def publisher() -> None:
        """QoS 1, and a message not acknowledged is published again after reconnecting."""
        nonlocal acked
        while acked < len(payloads):
            client = aiomqtt.Client("127.0.0.1", broker.port, identifier="ceir-publisher", timeout=1)
            try:
                async with client:
                    while acked < len(payloads):
                        await client.publish(TOPIC, payloads[acked], qos=1, timeout=2)
                        acked += 1
                        if acked == 100:
                            halfway.set()
            except aiomqtt.MqttError:
                # aiomqtt leaves the disconnection's exception unretrieved when a publish
                # times out instead (asyncio would warn about it at exit).
                lost = client._disconnected
                if lost.done() and not lost.cancelled():
                    lost.exception()
                await asyncio.sleep(0.05)

    f = Feed(broker, redis)
    async with f as feed:
        pub = asyncio.create_task(publisher())
        await asyncio.wait_for(halfway.wait(), 20)
        await asyncio.to_thread(broker.restart)
        await asyncio.wait_for(pub, 30)
        await wait_for(lambda: feed.stats.last_seq == 300, timeout=30, what="seq 300 applied")
        stats = feed.stats
    assert stats.reconnects >= 1  # the restart happened under the feed
    assert (stats.applied, stats.gaps, f.resyncs, stats.rejected) == (300, 0, 0, 0)
    assert await read_feed_seq(redis, PREFIX, FEED) == 300
    assert await read_lists(redis) == expected
    assert len(await logged_changes(redis)) == sum(len(s) for s in sets)


# -- the sync process ------------------------------------------------------------------------


def sync_config(tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker | None, **mqtt: Any) -> Config:
    sync: dict[str, Any] = {
        "snapshots": [{"path": str(tmp_path / "black.csv"), "format": "dirbs-blacklist", "list": "black"}],
        "lock_ttl_s": 1,
        "metrics": {"port": 0},
        "guards": {"max_size_change": 0.10, "max_removals": 0.05, "min_entries_to_guard": 100},
    }
    if broker is not None:
        sync["mqtt"] = {"url": broker.url, "topic": TOPIC, "client_id": "s13eir-sync", "feed": FEED, **mqtt}
    return config_from_mapping(
        {
            "node": {"origin_host": "eir.test", "origin_realm": "test"},
            "store": {"backend": "redis", "redis": {"url": redis_server.url, "prefix": PREFIX}},
            "sync": sync,
        }
    )


def write_black(tmp_path: Path, *numbers: int) -> None:
    rows = "".join(f"{imei(i)},20240301,stolen\n" for i in numbers)
    (tmp_path / "black.csv").write_text("imei,block_date,reasons\n" + rows)


def start(config: Config) -> tuple[SyncProcess, asyncio.Task[int]]:
    proc = SyncProcess(config, stats_interval_s=0.5, lock_poll_s=0.05, feed_backoff_s=(0.05, 0.5))
    return proc, asyncio.create_task(proc.run())


async def test_sync_process_imports_resyncs_hands_over_and_stops_on_lock_loss(
    tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker, redis: AnyRedis
) -> None:
    write_black(tmp_path, 1, 2, 3)
    config = sync_config(tmp_path, redis_server, broker)
    with structlog.testing.capture_logs() as logs:
        p1, t1 = start(config)
        await wait_for(lambda: p1.feed is not None and p1.feed.subscribed.is_set(), what="p1 subscribed")
        assert (await read_lists(redis))["black"] == {imei(1), imei(2), imei(3)}  # imported at start

        await publish(broker, msg(1, add("black", 10)))
        await wait_for(lambda: p1.feed is not None and p1.feed.stats.last_seq == 1)

        # The master list's snapshot moves on (it has 10 and the lost change 11); seq 2..4 never
        # arrive: seq 5 is a gap. Resync = the new snapshot, then 5 on top of it.
        write_black(tmp_path, 1, 2, 3, 10, 11)
        await publish(broker, msg(5, remove("black", 2), add("black", 12)))
        await wait_for(lambda: p1.feed is not None and p1.feed.stats.last_seq == 5, what="seq 5")
        assert p1.resyncs == 1 and p1.feed is not None and p1.feed.stats.gaps == 1
        assert (await read_lists(redis))["black"] == {imei(i) for i in (1, 3, 10, 11, 12)}
        assert await redis.hexists(k_sync_snapshots(PREFIX), "black")

        # A second process waits for the lock...
        p2, t2 = start(config)
        await wait_for(lambda: any(e["event"].startswith("waiting for the writer lock held by") for e in logs))
        assert p2.lock is None and not t2.done()

        # ...and takes over when the first stops; the persistent session carries on.
        p1.stop.set()
        assert await asyncio.wait_for(t1, 10) == EXIT_OK
        await wait_for(lambda: p2.feed is not None and p2.feed.subscribed.is_set(), what="p2 subscribed")
        await publish(broker, msg(6, add("black", 13)))
        await wait_for(lambda: p2.feed is not None and p2.feed.stats.last_seq == 6, what="p2 applies 6")
        assert p2.feed is not None and p2.feed.stats.gaps == 0  # continued from 5
        assert p2.resyncs == 0

        # Someone else takes the lock (p2 stalled past the TTL, say): p2 stops writing and exits 1.
        await redis.set(k_lock(PREFIX), "other-host:1:abc", px=60_000)
        assert await asyncio.wait_for(t2, 10) == EXIT_FAILURE
    events = [e["event"] for e in logs]
    assert "writer_lock_lost" in events
    assert "snapshot_unchanged" in events  # p2: the file is the one p1's resync imported
    assert (await read_lists(redis))["black"] == {imei(i) for i in (1, 3, 10, 11, 12, 13)}


async def test_sync_without_a_feed_imports_a_changed_snapshot_at_start(
    tmp_path: Path, redis_server: RedisServer, redis: AnyRedis
) -> None:
    config = sync_config(tmp_path, redis_server, None)

    async def run_once() -> list[str]:
        with structlog.testing.capture_logs() as logs:
            p, t = start(config)
            await wait_for(lambda: any(e["event"] == "sync_no_feed" for e in logs), what="start-up done")
            p.stop.set()
            assert await asyncio.wait_for(t, 10) == EXIT_OK
        return [e["event"] for e in logs if e["event"].startswith("snapshot_")]

    write_black(tmp_path, 1, 2)
    assert await run_once() == ["snapshot_import", "snapshot_imported"]  # no generation yet
    assert (await read_lists(redis))["black"] == {imei(1), imei(2)}
    first = await redis.hget(k_current(PREFIX), "black")

    assert await run_once() == ["snapshot_unchanged"]  # same file: not imported again
    assert await redis.hget(k_current(PREFIX), "black") == first

    write_black(tmp_path, 1, 2, 3)
    assert await run_once() == ["snapshot_import", "snapshot_imported"]  # changed (guards apply)
    assert (await read_lists(redis))["black"] == {imei(1), imei(2), imei(3)}
    assert await redis.hget(k_current(PREFIX), "black") != first


async def test_with_a_feed_a_changed_snapshot_waits_for_the_next_resync(
    tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker, redis: AnyRedis
) -> None:
    config = sync_config(tmp_path, redis_server, broker)
    write_black(tmp_path, 1, 2)
    p, t = start(config)
    await wait_for(lambda: p.feed is not None and p.feed.subscribed.is_set())
    await publish(broker, msg(1, add("black", 5)))
    await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 1)
    p.stop.set()
    assert await asyncio.wait_for(t, 10) == EXIT_OK

    write_black(tmp_path, 1, 2, 3)  # of unknown age: importing it would undo seq 1
    with structlog.testing.capture_logs() as logs:
        p, t = start(config)
        await wait_for(lambda: p.feed is not None and p.feed.subscribed.is_set())
        p.stop.set()
        assert await asyncio.wait_for(t, 10) == EXIT_OK
    assert "snapshot_changed_not_imported" in [e["event"] for e in logs]
    assert (await read_lists(redis))["black"] == {imei(1), imei(2), imei(5)}


async def test_broken_snapshot_at_start_exits_non_zero(tmp_path: Path, redis_server: RedisServer) -> None:
    (tmp_path / "black.csv").write_text("imei,block_date,reasons\nnot-an-imei,,x\n")
    p, t = start(sync_config(tmp_path, redis_server, None))
    assert await asyncio.wait_for(t, 10) == EXIT_FAILURE
    assert p.lock is not None


def test_feed_key_is_the_contract_key() -> None:
    assert k_feed(PREFIX, FEED) == "feedtest:feed:ceir"


async def test_cmd_sync_as_a_process_stops_on_sigterm_and_releases_the_lock(
    tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker, redis: AnyRedis
) -> None:
    write_black(tmp_path, 1)
    cfg = {
        "node": {"origin_host": "eir.test", "origin_realm": "test"},
        "store": {"backend": "redis", "redis": {"url": redis_server.url, "prefix": PREFIX}},
        "sync": {
            "snapshots": [{"path": str(tmp_path / "black.csv"), "format": "dirbs-blacklist", "list": "black"}],
            "mqtt": {"url": broker.url, "topic": TOPIC, "client_id": "s13eir-sync", "feed": FEED},
            "metrics": {"port": 0},
        },
        "logging": {"level": "info", "format": "json"},
    }
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    script = (
        "import argparse, sys\n"
        "from s13eir.sync.process import add_sync_parser\n"
        "p = argparse.ArgumentParser(); add_sync_parser(p.add_subparsers(dest='command'))\n"
        "args = p.parse_args(sys.argv[1:]); sys.exit(args.handler(args))\n"
    )
    log_path = tmp_path / "sync.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", script, "sync", "--config", str(path)], stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        await wait_for(lambda: b'"feed_connected"' in log_path.read_bytes() or proc.poll() is not None, 20)
        assert proc.poll() is None, log_path.read_text()
        assert await redis.get(k_lock(PREFIX)) is not None
        await publish(broker, msg(1, add("black", 2)))
        await wait_for(lambda: b'"feed_applied"' in log_path.read_bytes(), 10)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert await redis.get(k_lock(PREFIX)) is None  # released, not left to expire
    assert (await read_lists(redis))["black"] == {imei(1), imei(2)}
    assert b'"sync_stats"' in log_path.read_bytes()


# -- the feed never goes wrong silently -------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


async def test_a_gap_resync_never_overrides_the_guards(
    tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker, redis: AnyRedis
) -> None:
    """A stale snapshot after a gap must not roll the blacklist back: the feed stalls,
    says so, and goes on when an operator decides (SIGUSR1) or the file is fixed."""
    write_black(tmp_path, *range(1000))
    p, t = start(sync_config(tmp_path, redis_server, broker))
    try:
        await wait_for(lambda: p.feed is not None and p.feed.subscribed.is_set(), what="subscribed")
        assert p.feed is not None and p.http_port is not None
        await publish(broker, msg(1, *[add("black", 5000 + i) for i in range(200)]))
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 1, what="seq 1")
        write_black(tmp_path, *range(900))  # a stale, shorter export: 300 of 1200 entries gone
        await publish(broker, msg(4, add("black", 9000)))  # 2 and 3 were lost: a gap
        await wait_for(lambda: p.feed is not None and bool(p.feed.stalled), what="the feed stalls")
        black = (await read_lists(redis))["black"]
        assert len(black) == 1200 and imei(5000) in black and imei(950) in black  # nothing rolled back
        status, body = await asyncio.to_thread(http_get, p.http_port, "/readyz")
        assert status == 503 and body.startswith("feed stalled: resync after a gap before seq 4 refused"), body
        _, metrics = await asyncio.to_thread(http_get, p.http_port, "/metrics")
        assert "s13eir_sync_feed_stalled 1.0" in metrics
        imports = p.feed.stats.resync_refusals
        await asyncio.sleep(1.0)  # retried meanwhile, but the unchanged file is not imported again
        assert p.feed.stats.resync_refusals > imports and p.feed.stalled
        # A fixed export (the CEIR's current snapshot, which has seq 1..3 in it) unstalls it.
        write_black(tmp_path, *range(1000), *range(5000, 5200), 7000)
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 4, what="seq 4 after the fix")
        assert not p.feed.stalled and p.feed.stats.resyncs == 1
        assert (await asyncio.to_thread(http_get, p.http_port, "/readyz"))[0] == 200
        assert imei(7000) in (await read_lists(redis))["black"] and imei(9000) in (await read_lists(redis))["black"]
        # Another gap with another stale file; this time the operator forces it.
        write_black(tmp_path, *range(100))
        await publish(broker, msg(9, add("black", 9001)))
        await wait_for(lambda: p.feed is not None and bool(p.feed.stalled), what="stalled again")
        p.force_resync()  # what SIGUSR1 does
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 9, what="seq 9, forced")
        assert (await read_lists(redis))["black"] == {imei(i) for i in range(100)} | {imei(9001)}
    finally:
        p.stop.set()
        assert await asyncio.wait_for(t, 10) == EXIT_OK


async def test_an_absurd_seq_is_refused_and_the_feed_goes_on(
    tmp_path: Path, redis_server: RedisServer, broker: MosquittoBroker, redis: AnyRedis
) -> None:
    write_black(tmp_path, 1)
    p, t = start(sync_config(tmp_path, redis_server, broker, max_seq_jump=1000))
    try:
        await wait_for(lambda: p.feed is not None and p.feed.subscribed.is_set(), what="subscribed")
        assert p.feed is not None
        await publish(broker, msg(1, add("black", 10)))
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 1)
        await publish(broker, msg(9_000_000_000_000_000_000, remove("black", 10)), msg(1002, add("black", 12)))
        await wait_for(lambda: p.feed is not None and p.feed.stats.implausible == 2, what="both refused")
        assert await read_feed_seq(redis, PREFIX, FEED) == 1  # the baseline stays
        await publish(broker, msg(2, add("black", 11)))  # the genuine next change set applies
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 2, what="seq 2")
        assert (await read_lists(redis))["black"] == {imei(1), imei(10), imei(11)}
        assert p.resyncs == 0
    finally:
        p.stop.set()
        assert await asyncio.wait_for(t, 10) == EXIT_OK
