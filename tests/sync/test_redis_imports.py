"""Snapshot imports into Redis generations, DIRBS deltas and the ``lists`` commands,
against a real redis-server on a free port (the ``redis_server`` fixture)."""

from __future__ import annotations

import argparse
import asyncio
import operator
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import yaml
from rbloom import Bloom

from s13eir.config import GuardsConfig
from s13eir.lists.formats import ListFormatError, ListSpec
from s13eir.lists.redis_layout import (
    BUCKET,
    Change,
    decode_ids,
    decode_meta,
    entry_checksum,
    entry_line,
    exception_field,
    imei_field,
    k_bloom,
    k_changes,
    k_current,
    k_exception_bucket,
    k_imei_bucket,
    k_info,
    k_meta,
    k_nextgen,
    k_previous,
    k_ranges,
    k_seq,
    k_tac,
    parse_change,
)
from s13eir.sync import lists_cli
from s13eir.sync.deltas import delta_kind, parse_delta
from s13eir.sync.imports import rule_range_line, rule_tac_line
from s13eir.sync.lock import WriterError, writer_lock
from s13eir.sync.writer import ListWriter
from tests.services import RedisServer

P = "t"
NO_GUARDS = GuardsConfig(min_entries_to_guard=10**9)
GUARDS = GuardsConfig(max_size_change=0.10, max_removals=0.05, min_entries_to_guard=100)


def imei(i: int, tac: str = "35209900") -> str:
    return f"{tac}{i:06d}"


def write_blacklist(path: Path, rows: list[tuple[str, str]], extra: str = "") -> str:
    lines = ["# test list", "imei,block_date,reasons"] + [f"{i},20240301,{r}" for i, r in rows]
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


def write_exceptions(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("imei,imsi,msisdn\n" + "".join(f"{i},{s},1555\n" for i, s in rows))
    return str(path)


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def sync_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


async def gen_of(r: aioredis.Redis, list_name: str, key: str = "current") -> int | None:
    v = await r.hget(k_current(P) if key == "current" else k_previous(P), list_name)
    return int(v) if v is not None else None


async def keys_of_generation(r: aioredis.Redis, g: int) -> list[bytes]:
    return [k async for k in r.scan_iter(match=f"{P}:g:{g}:*")]


async def dump(r: aioredis.Redis) -> dict[bytes, Any]:
    """Every key with its value, to compare the whole database before and after."""
    out: dict[bytes, Any] = {}
    async for key in r.scan_iter():
        t = await r.type(key)
        if t == b"hash":
            out[key] = await r.hgetall(key)
        elif t == b"string":
            out[key] = await r.get(key)
        elif t == b"stream":
            out[key] = await r.xrange(key)
        else:
            out[key] = t
    return out


# --- layout ---------------------------------------------------------------------------------


async def test_import_writes_the_contract_layout(r: aioredis.Redis, tmp_path: Path) -> None:
    rows = [(imei(i), "stolen") for i in range(50)] + [(imei(i, "86000012"), "dup|gsma") for i in range(30)]
    rows.append((imei(3), "second reason"))  # same IMEI twice: ids merged
    rows.append((imei(4), "stolen"))  # exact duplicate row
    path = write_blacklist(tmp_path / "black.csv", rows)
    w = ListWriter(r, P, batch_size=16)
    rep = await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=GUARDS)

    assert rep.status == "imported" and rep.applied
    assert (rep.rows, rep.count, rep.duplicates) == (82, 80, 2)
    g = await gen_of(r, "black")
    assert g == rep.generation and await gen_of(r, "black", "previous") is None
    info = {k.decode(): v.decode() for k, v in (await r.hgetall(k_info(P, g))).items()}
    expected_imeis = sorted({i for i, _ in rows})
    assert info["list"] == "black" and info["state"] == "ready" and info["source"] == path
    assert int(info["count"]) == 80 and int(info["created"]) > 0
    assert info["checksum"] == entry_checksum(entry_line("black", i) for i in expected_imeis) == rep.checksum
    assert int(info["seq"]) == rep.seq == int(await r.get(k_seq(P)))

    metas = {int(k): decode_meta(v.decode()) for k, v in (await r.hgetall(k_meta(P, g))).items()}
    assert {m[2] for m in metas.values()} == {"stolen", "dup|gsma", "second reason"}
    assert all(m[0] == "black" and m[1] == path for m in metas.values())
    for i, reason in rows:
        n = int(i)
        value = await r.hget(k_imei_bucket(P, g, n), imei_field(n))
        assert value is not None
        reasons = {metas[m][2] for m in decode_ids(value)}
        assert reason in reasons
    three = await r.hget(k_imei_bucket(P, g, int(imei(3))), imei_field(int(imei(3))))
    assert {metas[m][2] for m in decode_ids(three)} == {"stolen", "second reason"}
    assert three.decode() == ",".join(str(m) for m in sorted(decode_ids(three)))  # encode_ids order
    # Two TACs, one bucket each (imei // 100000).
    buckets = [k async for k in r.scan_iter(match=f"{P}:g:{g}:e:*")]
    assert sorted(buckets) == sorted(
        {k_imei_bucket(P, g, int(imei(0))).encode(), k_imei_bucket(P, g, int(imei(0, "86000012"))).encode()}
    )
    assert await r.object("encoding", buckets[0]) == b"listpack"

    bloom = Bloom.load_bytes(await r.get(k_bloom(P, g)), operator.index)
    assert all(int(i) in bloom for i in expected_imeis)

    records = await r.xrange(k_changes(P))
    assert len(records) == 1 and records[0][0] == f"{rep.seq}-0".encode()
    seq, gen, what = parse_change({k.decode(): v.decode() for k, v in records[0][1].items()})
    assert (seq, gen, what) == (rep.seq, g, "black")


async def test_import_exceptions_and_rules(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    pairs = [(imei(1), "001010000000001"), (imei(1), "001010000000002"), (imei(2), "00101123")]
    path = write_exceptions(tmp_path / "exc.csv", [*pairs, pairs[0]])
    rep = await w.import_snapshot(ListSpec(path, "dirbs-exceptions"), "exceptions", guards=GUARDS)
    assert (rep.count, rep.duplicates) == (3, 1)
    g = await gen_of(r, "exceptions")
    assert g is not None
    for i, imsi in pairs:
        value = await r.hget(k_exception_bucket(P, g, int(i)), exception_field(int(i), imsi))
        assert value is not None and decode_meta((await r.hget(k_meta(P, g), value)).decode()) == (
            "exceptions",
            path,
            "",
        )
    assert rep.checksum == entry_checksum(entry_line("exceptions", i, s) for i, s in pairs)
    bloom = Bloom.load_bytes(await r.get(k_bloom(P, g)), operator.index)
    assert int(imei(1)) in bloom and int(imei(2)) in bloom

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "tac": [
                    {"tac": "86000012", "list": "black", "reason": "cloned"},
                    {"tac": "86000012", "list": "grey", "reason": "watch"},
                    {"tac": "01234567", "list": "grey"},
                ],
                "ranges": [{"from": "35875105000000", "to": "35875105009999", "list": "black", "reason": "batch"}],
            }
        )
    )
    rep = await w.import_snapshot(ListSpec(str(rules), "rules-yaml"), "rules", guards=GUARDS)
    g = await gen_of(r, "rules")
    assert g is not None and rep.count == 3
    tac = await r.hgetall(k_tac(P, g))
    metas = {int(k): decode_meta(v.decode()) for k, v in (await r.hgetall(k_meta(P, g))).items()}
    assert {metas[m][0] for m in decode_ids(tac[b"86000012"])} == {"black", "grey"}
    assert b"01234567" in tac  # leading zero kept
    ranges = await r.hgetall(k_ranges(P, g))
    assert list(ranges) == [b"35875105000000-35875105009999"]
    assert await r.get(k_bloom(P, g)) is None  # rules: every node keeps them in memory
    assert rep.checksum == entry_checksum(
        [rule_tac_line("86000012"), rule_tac_line("01234567"), rule_range_line("35875105000000-35875105009999")]
    )
    # A TAC moving from grey to black keeps the entry set (same checksum) but is not "unchanged".
    data = yaml.safe_load(rules.read_text())
    data["tac"][2]["list"] = "black"
    rules.write_text(yaml.safe_dump(data))
    rep2 = await w.import_snapshot(ListSpec(str(rules), "rules-yaml"), "rules", guards=GUARDS)
    assert rep2.status == "imported" and rep2.checksum == rep.checksum


async def test_csv_format_rejects_rows_of_another_list(r: aioredis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "ops.csv"
    path.write_text("imei,list,reason\n# comment\n35209900000001,black,a\n\n35209900000002,grey,b\n")
    w = ListWriter(r, P)
    with pytest.raises(ListFormatError) as exc:
        await w.import_snapshot(ListSpec(str(path), "csv"), "black", guards=GUARDS)
    assert exc.value.line == 5 and "grey" in exc.value.message
    assert await r.hgetall(k_current(P)) == {}
    assert [k async for k in r.scan_iter(match=f"{P}:g:*")] == []
    # The right list imports the black row only... no: a csv snapshot must be all one list.
    with pytest.raises(ListFormatError):
        await w.import_snapshot(ListSpec(str(path), "csv"), "grey", guards=GUARDS)
    with pytest.raises(ListFormatError, match="cannot make the black list"):
        await w.import_snapshot(ListSpec(str(path), "dirbs-exceptions"), "black", guards=GUARDS)


# --- generations ------------------------------------------------------------------------------


async def test_readers_see_the_old_generation_until_the_flip(
    r: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    w = ListWriter(r, P, batch_size=50)
    v1 = write_blacklist(tmp_path / "v1.csv", [(imei(i), "a") for i in range(200)])
    await w.import_snapshot(ListSpec(v1, "dirbs-blacklist"), "black", guards=GUARDS)
    old = await gen_of(r, "black")
    v2 = write_blacklist(tmp_path / "v2.csv", [(imei(i), "a") for i in range(205)])
    seen: list[tuple[int, bytes | None, bytes | None]] = []
    reader = sync_client(redis_server)

    def progress(rows: int) -> None:
        # What a node sees mid-import: the old generation, and the new one still loading.
        new = int(reader.get(k_nextgen(P)))
        seen.append((rows, reader.hget(k_current(P), "black"), reader.hget(k_info(P, new), "state")))

    rep = await w.import_snapshot(ListSpec(v2, "dirbs-blacklist"), "black", guards=GUARDS, progress=progress)
    reader.close()
    assert [s[0] for s in seen] == [50, 100, 150, 200, 205]
    assert all(cur == str(old).encode() and state == b"loading" for _, cur, state in seen)
    assert rep.applied and await gen_of(r, "black") == rep.generation != old
    assert await gen_of(r, "black", "previous") == old


async def test_reimport_of_the_same_content_is_unchanged(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    rows = [(imei(i), "a") for i in range(150)]
    path = write_blacklist(tmp_path / "b.csv", rows)
    first = await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=GUARDS)
    before = await dump(r)
    again = await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=GUARDS)
    assert again.status == "unchanged" and not again.applied
    # Same rows shuffled, from another path: still unchanged (the source is not content).
    other = write_blacklist(tmp_path / "other.csv", list(reversed(rows)))
    assert (await w.import_snapshot(ListSpec(other, "dirbs-blacklist"), "black", guards=GUARDS)).status == "unchanged"
    after = await dump(r)
    assert before.pop(k_nextgen(P).encode()) != after.pop(k_nextgen(P).encode())
    assert before == after  # the loading generations are gone, nothing else moved
    # One reason changed: same entries and checksum, but a new generation.
    rows[7] = (rows[7][0], "b")
    changed = write_blacklist(tmp_path / "c.csv", rows)
    rep = await w.import_snapshot(ListSpec(changed, "dirbs-blacklist"), "black", guards=GUARDS)
    assert rep.status == "imported" and rep.checksum == first.checksum and (rep.adds, rep.removals) == (0, 0)


async def test_guards_refuse_size_and_removals_and_force_overrides(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    base = [(imei(i), "a") for i in range(1000)]
    await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "base.csv", base), "dirbs-blacklist"), "black", guards=GUARDS
    )
    g = await gen_of(r, "black")
    before = await dump(r)

    truncated = write_blacklist(tmp_path / "trunc.csv", base[:850])  # -15 %: size and removals
    rep = await w.import_snapshot(ListSpec(truncated, "dirbs-blacklist"), "black", guards=GUARDS)
    assert rep.status == "refused" and not rep.applied
    assert [(v.name, v.ok) for v in rep.verdicts] == [("size", False), ("removals", False)]
    assert rep.removals == 150 and rep.current_count == 1000

    swapped = base[:900] + [(imei(i), "a") for i in range(5000, 5100)]  # same size, 10 % swapped
    rep = await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "swap.csv", swapped), "dirbs-blacklist"), "black", guards=GUARDS
    )
    assert rep.status == "refused" and [(v.name, v.ok) for v in rep.verdicts] == [("size", True), ("removals", False)]
    assert (rep.adds, rep.removals) == (100, 100)

    grown = base + [(imei(i), "a") for i in range(5000, 5080)]  # +8 %: allowed
    after = await dump(r)
    after.pop(k_nextgen(P).encode())
    before.pop(k_nextgen(P).encode())
    assert after == before  # refusals changed nothing
    rep = await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "grown.csv", grown), "dirbs-blacklist"), "black", guards=GUARDS
    )
    assert rep.applied and (rep.adds, rep.removals) == (80, 0)

    rep = await w.import_snapshot(ListSpec(truncated, "dirbs-blacklist"), "black", guards=GUARDS, force=True)
    assert rep.applied and rep.forced and rep.count == 850
    assert await gen_of(r, "black", "previous") != g  # g was previous before, now deleted
    assert await keys_of_generation(r, g) == []


async def test_dry_run_changes_nothing(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    base = [(imei(i), "a") for i in range(500)]
    await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "a.csv", base), "dirbs-blacklist"), "black", guards=GUARDS
    )
    before = await dump(r)
    new = base[10:] + [(imei(i), "a") for i in range(900, 920)]
    rep = await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "b.csv", new), "dirbs-blacklist"), "black", guards=GUARDS, dry_run=True
    )
    assert rep.dry_run and rep.status == "imported" and not rep.applied
    assert (rep.adds, rep.removals, rep.count, rep.current_count) == (20, 10, 510, 500)
    assert "would import" in rep.summary()
    after = await dump(r)
    assert before.pop(k_nextgen(P).encode()) != after.pop(k_nextgen(P).encode())
    assert before == after
    refused = await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "c.csv", base[:100]), "dirbs-blacklist"),
        "black",
        guards=GUARDS,
        dry_run=True,
    )
    assert refused.status == "refused" and "would be refused" in refused.summary()


async def test_malformed_file_midway_leaves_current_intact(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P, batch_size=100)
    good = write_blacklist(tmp_path / "good.csv", [(imei(i), "a") for i in range(300)])
    await w.import_snapshot(ListSpec(good, "dirbs-blacklist"), "black", guards=NO_GUARDS)
    before = await dump(r)
    rows = [(imei(i), "a") for i in range(1000, 1700)]
    bad = write_blacklist(tmp_path / "bad.csv", rows, extra="3520990000123x,20240301,oops\n35209900999999,,fine\n")
    with pytest.raises(ListFormatError) as exc:
        await w.import_snapshot(ListSpec(bad, "dirbs-blacklist"), "black", guards=NO_GUARDS)
    assert (exc.value.path, exc.value.line) == (bad, 703)  # comment, header, 700 rows, then the bad one
    assert "not 14-16 digits" in str(exc.value)
    after = await dump(r)
    partial = int(after.pop(k_nextgen(P).encode()))
    before.pop(k_nextgen(P).encode())
    assert before == after and await keys_of_generation(r, partial) == []


async def test_lost_writes_fail_the_verification(r: aioredis.Redis, redis_server: RedisServer, tmp_path: Path) -> None:
    w = ListWriter(r, P, batch_size=100)
    good = write_blacklist(tmp_path / "good.csv", [(imei(i), "a") for i in range(300)])
    await w.import_snapshot(ListSpec(good, "dirbs-blacklist"), "black", guards=NO_GUARDS)
    before = await dump(r)
    other = sync_client(redis_server)

    def lose_a_write(rows: int) -> None:
        # As after a failover to a replica that missed some writes.
        if rows == 500:
            new = int(other.get(k_nextgen(P)))
            other.hdel(k_imei_bucket(P, new, int(imei(1000))), imei_field(int(imei(1000))))

    v2 = write_blacklist(tmp_path / "v2.csv", [(imei(i), "a") for i in range(1000, 1600)])
    with pytest.raises(WriterError, match="does not read back as written: 599 entries"):
        await w.import_snapshot(ListSpec(v2, "dirbs-blacklist"), "black", guards=NO_GUARDS, progress=lose_a_write)
    other.close()
    after = await dump(r)
    partial = int(after.pop(k_nextgen(P).encode()))
    before.pop(k_nextgen(P).encode())
    assert before == after and await keys_of_generation(r, partial) == []


async def test_a_cancelled_import_cleans_up(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P, batch_size=50)
    path = write_blacklist(tmp_path / "big.csv", [(imei(i), "a") for i in range(2000)])
    started = asyncio.Event()
    task = asyncio.create_task(
        w.import_snapshot(
            ListSpec(path, "dirbs-blacklist"), "black", guards=NO_GUARDS, progress=lambda n: started.set()
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await r.hgetall(k_current(P)) == {}
    assert [k async for k in r.scan_iter(match=f"{P}:g:*")] == []


async def test_old_generations_are_deleted(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    gens = []
    for n in range(4):
        path = write_blacklist(tmp_path / f"{n}.csv", [(imei(i), "a") for i in range(n + 1)])
        gens.append((await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=NO_GUARDS)).generation)
    # A leftover of a crashed import of the same list, and a generation of another list.
    await r.hset(k_info(P, 99), mapping={"list": "black", "state": "loading"})
    await r.hset(f"{P}:g:99:e:123", "1", "1")
    await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "g.csv", [(imei(1), "a")]), "dirbs-blacklist"), "grey", guards=NO_GUARDS
    )
    grey = await gen_of(r, "grey")
    path = write_blacklist(tmp_path / "last.csv", [(imei(i), "b") for i in range(7)])
    last = (await w.import_snapshot(ListSpec(path, "dirbs-blacklist"), "black", guards=NO_GUARDS)).generation
    generations = {int(k.split(b":")[2]) async for k in r.scan_iter(match=f"{P}:g:*")}
    assert generations == {gens[-1], last, grey}


# --- deltas -------------------------------------------------------------------------------------


def test_delta_kind_from_file_name() -> None:
    assert delta_kind("/x/20240301_blacklist_delta_1_2_blocked.csv") == "blocked"
    assert delta_kind("UNBLOCKED.CSV") == "unblocked"
    assert delta_kind("notblocked.csv") is None
    assert delta_kind("a_Unblocked.csv") == "unblocked"
    assert delta_kind("ex_op1_removed.csv") == "removed"
    assert delta_kind("blacklist.csv") is None


async def test_delta_files_of_every_kind(r: aioredis.Redis, tmp_path: Path) -> None:
    w = ListWriter(r, P)
    await w.import_snapshot(
        ListSpec(write_blacklist(tmp_path / "full.csv", [(imei(i), "old") for i in range(5)]), "dirbs-blacklist"),
        "black",
        guards=NO_GUARDS,
    )
    blocked = write_blacklist(tmp_path / "d_blocked.csv", [(imei(10), "stolen"), (imei(11), "dup")])
    unblocked = write_blacklist(tmp_path / "d_unblocked.csv", [(imei(0), "old"), (imei(42), "never listed")])
    changed = write_blacklist(tmp_path / "d_changed.csv", [(imei(1), "new|reasons")])
    added = write_exceptions(tmp_path / "x_added.csv", [(imei(1), "00101123456")])
    removed = write_exceptions(tmp_path / "x_removed.csv", [(imei(1), "00101123456")])
    for path in (blocked, unblocked, changed, added):
        _kind, changes = parse_delta(path)
        await w.apply_changes(changes)
    g = await gen_of(r, "black")
    assert g is not None
    content = await current_entries(r, "black")
    assert content == {
        imei(1): {(changed, "new|reasons")},
        **{imei(i): {(str(tmp_path / "full.csv"), "old")} for i in (2, 3, 4)},
        imei(10): {(blocked, "stolen")},
        imei(11): {(blocked, "dup")},
    }
    assert await current_entries(r, "exceptions") == {f"{imei(1)}/00101123456": {(added, "")}}
    kind, changes = parse_delta(removed)
    assert kind == "removed" and [c.op for c in changes] == ["remove"]
    await w.apply_changes(changes)
    assert await current_entries(r, "exceptions") == {}
    # changed = remove + add, in that order, in the stream
    kind, changes = parse_delta(changed)
    assert kind == "changed" and [(c.op, c.source) for c in changes] == [("remove", ""), ("add", changed)]
    # --kind overrides the name
    kind, changes = parse_delta(blocked, "unblocked")
    assert kind == "unblocked" and {c.op for c in changes} == {"remove"}


async def test_a_bad_delta_row_applies_nothing(r: aioredis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "d_blocked.csv"
    path.write_text("imei,block_date,reasons\n35209900000001,20240301,a\n35209900000002,2024-03-01,b\n")
    with pytest.raises(ListFormatError) as exc:
        parse_delta(str(path))
    assert exc.value.line == 3
    with pytest.raises(ListFormatError, match="delta kind"):
        parse_delta(str(tmp_path / "plain.csv"))
    # Through the command: exit 2 and an untouched Redis.
    before = await dump(r)
    assert await run_cli(tmp_path, r, "apply-delta", str(path)) == 2
    assert await dump(r) == before


async def current_entries(r: aioredis.Redis, list_name: str) -> dict[str, set[tuple[str, str]]]:
    """The current generation of a list as {imei or imei/imsi: {(source, detail)}}."""
    g = await gen_of(r, list_name)
    if g is None:
        return {}
    metas = {int(k): decode_meta(v.decode()) for k, v in (await r.hgetall(k_meta(P, g))).items()}
    letter = "x" if list_name == "exceptions" else "e"
    out: dict[str, set[tuple[str, str]]] = {}
    async for key in r.scan_iter(match=f"{P}:g:{g}:{letter}:*"):
        base = int(key.rsplit(b":", 1)[1]) * BUCKET
        for field, value in (await r.hgetall(key)).items():
            if letter == "x":
                low, imsi = field.decode().split(":")
                name = f"{base + int(low):014d}/{imsi}"
            else:
                name = f"{base + int(field):014d}"
            out[name] = {(metas[m][1], metas[m][2]) for m in decode_ids(value)}
    return out


# --- the command ------------------------------------------------------------------------------


async def run_cli(tmp_path: Path, r: aioredis.Redis, *argv: str) -> int:
    """``s13eir lists ARGV --config <a config naming this test's Redis>``, in a thread
    (the command runs its own event loop)."""
    kwargs = r.connection_pool.connection_kwargs
    cfg = {
        "node": {"origin_host": "eir.test", "origin_realm": "test"},
        "store": {"backend": "redis", "redis": {"url": f"redis://{kwargs['host']}:{kwargs['port']}/0", "prefix": P}},
        "sync": {"guards": {"max_size_change": 0.1, "max_removals": 0.05, "min_entries_to_guard": 100}},
    }
    config = tmp_path / "eir.yaml"
    config.write_text(yaml.safe_dump(cfg))
    parser = argparse.ArgumentParser(prog="s13eir")
    lists_cli.add_lists_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lists", *argv, "--config", str(config)])
    return await asyncio.to_thread(args.handler, args)


async def test_lists_commands(r: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_blacklist(tmp_path / "base.csv", [(imei(i), "a") for i in range(300)])
    assert await run_cli(tmp_path, r, "import", base, "--list", "black") == 0
    assert "imported: 300 entries" in capsys.readouterr().out
    assert await run_cli(tmp_path, r, "import", base, "--list", "black") == 0
    assert "unchanged" in capsys.readouterr().out
    small = write_blacklist(tmp_path / "small.csv", [(imei(i), "a") for i in range(100)])
    assert await run_cli(tmp_path, r, "import", small, "--list", "black", "--dry-run") == 1
    assert "would be refused" in capsys.readouterr().out
    assert await run_cli(tmp_path, r, "import", small, "--list", "black") == 1
    assert "REFUSED" in capsys.readouterr().out
    assert await run_cli(tmp_path, r, "import", small, "--list", "black", "--force") == 0
    bad = write_blacklist(tmp_path / "bad.csv", [(imei(1), "a")], extra="123,20240301,x\n")
    assert await run_cli(tmp_path, r, "import", bad, "--list", "black") == 2
    assert f"{bad}:4: IMEI '123'" in capsys.readouterr().err
    assert await run_cli(tmp_path, r, "import", base, "--list", "exceptions", "--format", "csv") == 2
    assert await run_cli(tmp_path, r, "import", str(tmp_path / "missing.csv"), "--list", "grey") == 2

    delta = write_blacklist(tmp_path / "x_blocked.csv", [(imei(900), "new")])
    assert await run_cli(tmp_path, r, "apply-delta", delta) == 0
    assert "blocked: 1 changes applied" in capsys.readouterr().out
    assert await run_cli(tmp_path, r, "rollback", "--list", "black") == 0
    assert await current_entries(r, "black") == {imei(i): {(base, "a")} for i in range(300)}
    assert await run_cli(tmp_path, r, "rollback", "--list", "grey") == 1
    capsys.readouterr()
    assert await run_cli(tmp_path, r, "status") == 0
    out = capsys.readouterr().out
    assert "black      generation" in out and "300 entries" in out
    assert await run_cli(tmp_path, r, "status", "--json") == 0
    assert '"count": 300' in capsys.readouterr().out

    # Another process holds the writer lock: fail fast, naming it.
    async with writer_lock(r, P, 10.0, holder="sync-on-eir2"):
        assert await run_cli(tmp_path, r, "rollback", "--list", "black") == 1
        assert "held by sync-on-eir2" in capsys.readouterr().err


async def test_changes_on_a_list_without_a_snapshot_make_a_generation(r: aioredis.Redis) -> None:
    w = ListWriter(r, P)
    seq = await w.apply_changes([Change("add", "grey", imei(1), reason="r", source="feed")])
    g = await gen_of(r, "grey")
    assert g is not None and seq == 2  # the generation record, then the change
    assert await current_entries(r, "grey") == {imei(1): {("feed", "r")}}
    with pytest.raises(WriterError, match="no previous"):
        await w.rollback("grey")
