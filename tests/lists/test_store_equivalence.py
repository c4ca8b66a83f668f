"""Proof by differential testing: every node answers exactly as the accepted lists say.

A hypothesis RuleBasedStateMachine drives real processes: a redis-server (or a
3-master Redis Cluster), a mosquitto, a real ``s13eir sync`` subprocess consuming the
MQTT feed with snapshot files for every list, and one or two nodes (``RedisLists``,
the store every ``s13eir serve`` uses) following Redis. Steps: snapshot imports of
every list kind and size, DIRBS-style deltas, rollbacks, MQTT change sets (in order,
duplicated, with a lost message, reordered, with an absurd seq), removals past the
Bloom rebuild threshold, Redis restarts with and without persistence, broker restarts
with and without persistence.

The reference (tests/equivalence_model.py) is what the writer accepted, computed with
``decision/`` from plain data. After each step, once the change reached the nodes
(bounded waits), a ready node's verdict (status, rule and reason) for the touched IMEIs
and a sample equals the reference's. While a node is not ready (Redis away, the store
regressed), the outage policy applies, and never a WHITELISTED for an IMEI the
accepted lists black- or greylist.

``make test`` runs a short profile; ``bench/store_equivalence.py`` runs thousands of
steps with printed seeds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import redis as redis_sync
import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s13eir.backends.redis_client import connect
from s13eir.config import GuardsConfig, RedisConfig
from s13eir.decision.engine import decide
from s13eir.decision.model import EquipmentStatus, Facts, ListKind, UnknownPolicy, Verdict
from s13eir.decision.policy import StoreUnavailablePolicy, outage_verdict
from s13eir.lists import redis_layout as L
from s13eir.lists.formats import ListSpec
from s13eir.lists.redis_store import RedisLists
from s13eir.lists.store_state import StoreUnavailable
from s13eir.sync.changeset import encode_changeset
from s13eir.sync.deltas import parse_delta
from s13eir.sync.lock import writer_lock
from s13eir.sync.writer import ListWriter
from tests.equivalence_model import (
    ALL,
    FORMAT,
    IMEI_LISTS,
    IMSIS,
    POOL,
    Lists,
    random_content,
    read_snapshot,
    same_content,
    write_snapshot,
)
from tests.services import MosquittoBroker, RedisServer, _free_port, _wait_port, require

PREFIX = "eqv"
FEED = "ceir"
TOPIC = "eqv/changes"
NO_GUARDS = GuardsConfig(min_entries_to_guard=10**9)
MAX_SEQ_JUMP = 1000
_RUNS = itertools.count()
STATS: Counter[str] = Counter()  # steps and rules run, for bench/store_equivalence.py
# The longest wait, per kind of step, from the writer's last change to every node caught up.
PROPAGATION_S: dict[str, float] = {}
WAIT_S = 15.0  # the documented bound here is about a second; generous for a loaded CI machine


# -- processes -----------------------------------------------------------------------------


class Cluster:
    """Three redis-server masters on loopback ports, slots split by redis-cli."""

    def __init__(self, workdir: Path) -> None:
        self.servers = [RedisServer(workdir / f"c{i}") for i in range(3)]
        self.bus = [_free_port() for _ in self.servers]

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        for s, bus in zip(self.servers, self.bus, strict=True):
            cmd = [exe, "--bind", "127.0.0.1", "--port", str(s.port), "--dir", str(s.workdir), "--save", "",
                   "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-port", str(bus)]  # fmt: skip
            s.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=s.workdir)
            _wait_port(s.port, s.proc, "redis cluster node")
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in self.servers],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)  # fmt: skip
        deadline = time.monotonic() + 20
        for s in self.servers:
            while (
                "cluster_state:ok"
                not in subprocess.run(
                    ["redis-cli", "-p", str(s.port), "cluster", "info"], capture_output=True, text=True
                ).stdout
            ):
                assert time.monotonic() < deadline, "the cluster did not become ok"
                time.sleep(0.05)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}"


class Harness:
    """The processes of one run and the writer's accepted lists."""

    def __init__(self, workdir: Path, *, nodes: int, cluster: bool) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.redis: RedisServer | Cluster = Cluster(workdir / "redis") if cluster else RedisServer(workdir / "redis")
        self.broker = MosquittoBroker(workdir / "mqtt")
        self.snapshots = {name: workdir / f"master-{name}.{'yaml' if name == 'rules' else 'csv'}" for name in ALL}
        self.sync_log = workdir / "sync.log"
        self.sync: subprocess.Popen[bytes] | None = None
        self.sync_http = _free_port()
        self.n_nodes = nodes
        self.nodes: list[RedisLists] = []
        self.accepted = Lists()  # what the writer accepted: the reference
        self.previous: dict[str, Any] = {}  # each list's previous generation, for rollbacks
        self.present: set[str] = set()  # lists with a generation in Redis
        # Lists changed since their generation was imported: the writer dropped the digest,
        # so an import of the same content is a new generation, not "unchanged".
        self.dirty: set[str] = set()
        self.master = Lists()  # the master list (CEIR): its snapshot files and its feed
        self.feed_seq = 0  # the last seq the master list published
        self.stored: int | None = None  # the feed seq s13eir sync keeps in Redis
        self.touched: set[str] = set()
        self.steps = 0

    def rcfg(self) -> RedisConfig:
        return RedisConfig(url=self.redis.url, prefix=PREFIX, cluster=self.cluster)

    def raw(self) -> Any:
        if self.cluster:
            return redis_sync.RedisCluster.from_url(self.redis.url)
        return redis_sync.Redis.from_url(self.redis.url)

    # -- the sync process --------------------------------------------------------------

    def sync_config(self) -> Path:
        cfg = {
            "node": {"origin_host": "eir.eqv.test", "origin_realm": "eqv.test"},
            "store": {"backend": "redis", "lists": [],
                      "redis": {"url": self.redis.url, "prefix": PREFIX, "cluster": self.cluster}},
            "sync": {
                "snapshots": [{"path": str(p), "format": FORMAT[n], "list": n} for n, p in self.snapshots.items()],
                "guards": {"min_entries_to_guard": 10**9},
                "lock_ttl_s": 3,
                "mqtt": {"url": self.broker.url, "topic": TOPIC, "client_id": "eqv-sync", "feed": FEED,
                         "max_seq_jump": MAX_SEQ_JUMP},
                "metrics": {"enabled": True, "address": "127.0.0.1", "port": self.sync_http},
            },
            "logging": {"level": "info", "format": "json"},
        }  # fmt: skip
        path = self.workdir / "sync.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start_sync(self) -> None:
        config = self.sync_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("S13EIR_")}  # those are settings
        with open(self.sync_log, "ab") as log:
            self.sync = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "sync", "--config", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        # At start it imports the snapshot of every list Redis has no generation for.
        for name in ALL:
            if name not in self.present:
                self.import_accepted(name, read_snapshot(self.snapshots[name], name))
        self.wait_for(lambda: self.sync_metric("s13eir_sync_feed_connected") == 1, "s13eir sync subscribed")

    def stop_sync(self) -> None:
        if self.sync is not None and self.sync.poll() is None:
            self.sync.send_signal(signal.SIGTERM)
            self.sync.wait(15)
        self.sync = None

    def sync_metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.sync_http}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_for(self, cond: Any, what: str, timeout: float = WAIT_S, sync_may_exit: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if not sync_may_exit and self.sync is not None and self.sync.poll() is not None:
                raise AssertionError(f"s13eir sync exited ({self.sync.returncode}) waiting for {what}:\n"
                                     + self.sync_log.read_text()[-3000:])  # fmt: skip
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    # -- the model ------------------------------------------------------------------------

    def import_accepted(self, name: str, content: Lists) -> None:
        """An import the writer made current (``unchanged`` ones are not: see same_content)."""
        if name in self.present:
            if name not in self.dirty and same_content(self.accepted, content, name):
                return
            self.previous[name] = (self.accepted.part(name), name in self.dirty)
        self.accepted.set_part(name, content.part(name))
        self.present.add(name)
        self.dirty.discard(name)

    def apply(self, c: L.Change) -> None:
        if self.accepted.apply(c):
            self.dirty.add(c.list)

    def receive(self, seq: int, changes: list[L.Change]) -> None:
        """One change set as s13eir sync handles it (mqtt_feed's module docstring)."""
        if seq - (self.stored or 0) > MAX_SEQ_JUMP:
            return  # implausible: refused, the baseline kept
        expected = 1 if self.stored is None else self.stored + 1
        if seq < expected:
            return  # a duplicate
        if seq > expected:  # a gap: every snapshot again, then this message
            for name in ALL:
                self.import_accepted(name, read_snapshot(self.snapshots[name], name))
        for c in changes:
            self.apply(c)
        self.stored = seq

    def export(self) -> None:
        for name, path in self.snapshots.items():
            write_snapshot(path, name, self.master)

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, payloads: list[bytes]) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="eqv-ceir", timeout=5) as c:
            for p in payloads:
                await c.publish(TOPIC, p, qos=1)

    def wait_feed(self) -> None:
        """Until the sync handled every published change set: its feed seq in Redis is the
        model's, and it has no message left (the counters of its /metrics stop moving)."""
        r = self.raw()
        try:
            self.wait_for(lambda: int(r.hget(L.k_feed(PREFIX, FEED), "seq") or 0) == (self.stored or 0),
                          f"feed seq {self.stored} applied")  # fmt: skip
        finally:
            r.close()


# -- the node's answer ------------------------------------------------------------------------


async def node_verdict(node: RedisLists, imei14: str, imsi: str | None) -> tuple[Verdict | None, bool]:
    """(verdict, from the outage policy) as a node answers: the request path of S13."""
    facts = node.facts(imei14, imsi)
    if isinstance(facts, Facts):
        return decide(facts, imsi, UnknownPolicy.WHITELISTED, imei14), False
    try:
        facts = await node.fetch(imei14, imsi)
    except StoreUnavailable as e:
        out = outage_verdict(StoreUnavailablePolicy.LAST_KNOWN, e.last_known, e.positives, imsi,
                             UnknownPolicy.WHITELISTED, imei14)  # fmt: skip
        return (None if out is None else out[0]), True
    return decide(facts, imsi, UnknownPolicy.WHITELISTED, imei14), False


def key(v: Verdict | None) -> tuple[Any, ...]:
    if v is None:
        return (None,)
    r = v.reason
    return (v.status, r.rule, r.list, r.source, r.entry, r.detail)


# -- the machine ------------------------------------------------------------------------------


class StoreEquivalence(RuleBasedStateMachine):
    """One run: processes started in ``setup``, stopped in ``teardown``."""

    NODES = 1
    CLUSTER = False
    WORKDIR: Path = Path("/tmp")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        run = next(_RUNS)
        self.h = Harness(self.WORKDIR / f"run-{run}", nodes=self.NODES, cluster=self.CLUSTER)
        self.rng = random.Random(0)  # seeded by setup, from the example's data: replays are the same

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def setup(self, data: st.DataObject, seed: int) -> None:
        h = self.h
        self.rng.seed(seed)
        h.workdir.mkdir(parents=True, exist_ok=True)
        h.redis.start()
        h.broker.start()
        for name in ALL:
            size = data.draw(st.sampled_from([0, 1, 5, 40, 150]), label=f"initial {name}")
            h.master.set_part(name, random_content(self.rng, name, size).part(name))
        h.export()
        h.start_sync()
        h.nodes = [RedisLists(connect(h.rcfg(), timeout_s=5), PREFIX, timeout_s=2.0, rebuild_after_removals=0.2)
                   for _ in range(h.n_nodes)]  # fmt: skip
        for node in h.nodes:
            self.run(node.start())
        h.touched = set(self.rng.sample(POOL, 20))
        self.settle()

    def teardown(self) -> None:
        h = self.h
        try:
            for node in h.nodes:
                self.run(node.stop())
        finally:
            self.loop.close()
            h.stop_sync()
            h.broker.stop()
            h.redis.stop()

    # -- waiting and checking --------------------------------------------------------------

    def settle(self) -> None:
        """Until every node is ready and has read everything Redis has."""
        h = self.h
        r = h.raw()
        try:

            def caught_up() -> bool:
                seq = int(r.get(L.k_seq(PREFIX)) or 0)
                self.run(asyncio.sleep(0.02))  # the nodes' followers run while the loop does
                return all(n.ready()[0] and n.seq == seq for n in h.nodes)

            h.wait_for(caught_up, "the nodes caught up with Redis")
        finally:
            r.close()

    def check(self, ready: bool = True) -> None:
        h = self.h
        sample = set(self.rng.sample(POOL, 30)) | h.touched
        for node in h.nodes:
            for imei in sorted(sample):
                for imsi in (None, self.rng.choice(IMSIS)):
                    got, outage = self.run(node_verdict(node, imei, imsi))
                    want = h.accepted.verdict(imei, imsi)
                    if ready:
                        assert not outage and key(got) == key(want), (
                            f"step {h.steps}: {imei}/{imsi}: node {key(got)} != reference {key(want)}; "
                            + self.where(node, imei)
                        )
                    elif want.status in (EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED):
                        assert got is None or got.status is not EquipmentStatus.WHITELISTED, (
                            f"step {h.steps}: {imei}/{imsi} is {want.status.name} and was answered WHITELISTED "
                            "during an outage"
                        )
        h.touched = set()

    def where(self, node: RedisLists, imei: str) -> str:
        """What the node and Redis hold for ``imei``: where a divergence comes from."""
        n = int(imei)
        blooms = {name: n in lst.bloom for name, lst in node._lists.items() if lst.bloom is not None}
        active = [name for name, lst in node._lists.items() if any(lst.bloom is b for b in node._blooms)]
        cached = [k for k in node._cache if k[0] == imei]
        r = self.h.raw()
        try:
            current = {k.decode(): int(v) for k, v in r.hgetall(L.k_current(PREFIX)).items()}
            stored = {}
            for name, gen in current.items():
                if name in IMEI_LISTS:
                    stored[name] = r.hget(L.k_imei_bucket(PREFIX, gen, n), L.imei_field(n))
        finally:
            r.close()
        gens = {k: v.gen for k, v in node._lists.items()}
        counts = {k: v.count for k, v in node._lists.items()}
        return (f"node: in bloom {blooms}, blooms consulted {active}, generations {gens}, counts {counts}, "
                f"cached {cached}, rebuilding {sorted(node._rebuilding)}, seq {node.seq}, state {node.state()}; "
                f"redis: current {current}, entry {stored}")  # fmt: skip

    def after_write(self, what: str) -> None:
        self.h.steps += 1
        STATS["steps"] += 1
        STATS[what] += 1
        t0 = time.monotonic()
        self.settle()
        kind = what.split(" (")[0]
        PROPAGATION_S[kind] = max(PROPAGATION_S.get(kind, 0.0), time.monotonic() - t0)
        self.check()

    # -- rules: the feed -------------------------------------------------------------------

    def _changes(self, n: int) -> list[L.Change]:
        out: list[L.Change] = []
        for _ in range(n):
            name = self.rng.choice([*IMEI_LISTS, "exceptions"])
            imei = self.rng.choice(POOL)
            if name == "exceptions":
                imsi = self.rng.choice(IMSIS)
                present = (imei, imsi) in self.h.master.exceptions
                op = "remove" if present and self.rng.random() < 0.5 else "add"
                out.append(L.Change(op, "exceptions", imei, imsi, "", FEED if op == "add" else ""))  # type: ignore[arg-type]
            else:
                present = imei in self.h.master.imei[name]
                op = "remove" if present and self.rng.random() < 0.6 else "add"
                reason = "feed-" + self.rng.choice(["stolen", "lost"]) if op == "add" else ""
                out.append(L.Change(op, name, imei, "", reason, FEED if op == "add" else ""))  # type: ignore[arg-type]
            self.h.master.apply(out[-1])
            self.h.touched.add(imei)
        return out

    @rule(count=st.integers(1, 4), size=st.integers(0, 6),
          mode=st.sampled_from(["in_order", "duplicate", "lost", "reorder", "absurd"]))  # fmt: skip
    def publish(self, count: int, size: int, mode: str) -> None:
        h = self.h
        sets = [self._changes(size) for _ in range(count)]
        h.export()  # the master list exports after publishing (config/mqtt-deltas.md)
        msgs = [(h.feed_seq + 1 + i, s) for i, s in enumerate(sets)]
        h.feed_seq += count
        if mode == "duplicate":
            msgs = [m for m in msgs for _ in (0, 1)]
        elif mode == "lost":
            # The first is lost; an empty change set after the last reveals the gap.
            h.feed_seq += 1
            msgs = [*msgs[1:], (h.feed_seq, [])]
        elif mode == "reorder":
            msgs = msgs[::-1]
        elif mode == "absurd":
            msgs = [(9_000_000_000_000_000_000, self._noise()), *msgs]
        for seq, changes in msgs:
            h.receive(seq, changes)
        self.run(h.publish([encode_changeset(seq, c, feed=FEED) for seq, c in msgs]))
        h.wait_feed()
        self.after_write(f"publish {mode}")

    def _noise(self) -> list[L.Change]:
        """Changes of an absurd message: refused, so never in any list."""
        imei = self.rng.choice(POOL)
        self.h.touched.add(imei)
        return [L.Change("add", "black", imei, "", "hostile", FEED)]

    # -- rules: snapshots, deltas, rollbacks (the sync stopped: the writer lock is its) --------

    @rule(name=st.sampled_from(ALL), size=st.sampled_from([0, 1, 3, 30, 200]))
    def import_snapshot(self, name: str, size: int) -> None:
        h = self.h
        h.stop_sync()
        content = random_content(self.rng, name, size)
        path = h.workdir / f"direct-{name}-{h.steps}.{'yaml' if name == 'rules' else 'csv'}"
        write_snapshot(path, name, content)
        h.touched |= set(self.rng.sample(POOL, 10)) | set(content.imei.get(name, {}))

        async def go() -> str:
            r = connect(h.rcfg(), timeout_s=30)
            try:
                async with writer_lock(r, PREFIX, 3.0, wait=True, poll_s=0.05) as lock:
                    w = ListWriter(r, PREFIX, lock=lock)
                    kind = ListKind.BLACK if name == "black" else None
                    report = await w.import_snapshot(ListSpec(str(path), FORMAT[name], kind), name, guards=NO_GUARDS)
                    return report.status
            finally:
                await r.aclose()

        status = self.run(go())
        if status == "imported":
            h.import_accepted(name, read_snapshot(path, name))
        h.start_sync()
        self.after_write(f"import {name} ({status})")

    @rule(kind=st.sampled_from(["blocked", "unblocked", "changed", "added", "removed"]), n=st.integers(1, 8),
          which=st.sampled_from(["black", "grey"]))  # fmt: skip
    def apply_delta(self, kind: str, n: int, which: str) -> None:
        """A DIRBS delta file, as ``s13eir lists apply-delta`` applies it (the sync stopped)."""
        h = self.h
        target = which
        h.stop_sync()
        path = h.workdir / f"20260101_blacklist_delta_base_run{h.steps}_{kind}.csv"
        if kind in ("added", "removed"):
            pairs = sorted(h.accepted.exceptions) if kind == "removed" else []
            rows = self.rng.sample(pairs, min(n, len(pairs))) if pairs else []
            rows += [(self.rng.choice(POOL), self.rng.choice(IMSIS)) for _ in range(n - len(rows))]
            path.write_text("imei,imsi,msisdn\n" + "".join(f"{i},{m},1555\n" for i, m in dict(rows).items()))
            h.touched |= {i for i, _ in rows}
            target = "exceptions"
        else:
            have = sorted(h.accepted.imei[target])
            picks = self.rng.sample(have, min(n, len(have))) if kind != "blocked" and have else []
            picks += self.rng.sample(POOL, n - len(picks))
            reason = self.rng.choice(["stolen", "lost|fraud"])
            path.write_text("imei,block_date,reasons\n" + "".join(f"{i},20260101,{reason}\n" for i in set(picks)))
            h.touched |= set(picks)
        _, changes = parse_delta(str(path), list_name=target if target != "exceptions" else "black")  # type: ignore[arg-type]

        async def go() -> None:
            r = connect(h.rcfg(), timeout_s=30)
            try:
                async with writer_lock(r, PREFIX, 3.0, wait=True, poll_s=0.05) as lock:
                    await ListWriter(r, PREFIX, lock=lock).apply_changes(changes)
            finally:
                await r.aclose()

        self.run(go())
        for c in changes:
            h.apply(c)
        h.start_sync()
        self.after_write(f"delta {kind}")

    @precondition(lambda self: bool(self.h.previous))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        h = self.h
        name = data.draw(st.sampled_from(sorted(h.previous)), label="rollback")
        h.stop_sync()

        async def go() -> None:
            r = connect(h.rcfg(), timeout_s=30)
            try:
                async with writer_lock(r, PREFIX, 3.0, wait=True, poll_s=0.05) as lock:
                    await ListWriter(r, PREFIX, lock=lock).rollback(name)
            finally:
                await r.aclose()

        self.run(go())
        current = (h.accepted.part(name), name in h.dirty)
        content, dirty = h.previous[name]
        h.accepted.set_part(name, content)
        h.dirty.discard(name)
        if dirty:
            h.dirty.add(name)
        h.previous[name] = current
        h.touched |= set(self.rng.sample(POOL, 20))
        h.start_sync()
        self.after_write(f"rollback {name}")

    @precondition(lambda self: len(self.h.master.imei["black"]) >= 5)
    @rule(share=st.sampled_from([0.3, 0.6, 1.0]))
    def remove_many(self, share: float) -> None:
        """Removals past the nodes' rebuild threshold (rebuild_after_removals 0.2): the
        nodes rebuild their Bloom filters from Redis while answering."""
        h = self.h
        black = sorted(h.master.imei["black"])
        gone = black[: int(len(black) * share)]
        changes = [L.Change("remove", "black", i) for i in gone]
        for c in changes:
            h.master.apply(c)
        h.touched |= set(gone[:40])
        h.export()
        h.feed_seq += 1
        h.receive(h.feed_seq, changes)
        self.run(h.publish([encode_changeset(h.feed_seq, changes, feed=FEED)]))
        h.wait_feed()
        self.after_write(f"remove {len(changes)} of the blacklist")

    # -- rules: restarts ---------------------------------------------------------------------

    @precondition(lambda self: not self.CLUSTER and self.h.steps % 3 == 2)
    @rule(persist=st.booleans())
    def restart_redis(self, persist: bool) -> None:
        h = self.h
        assert isinstance(h.redis, RedisServer)
        r = h.raw()
        if persist:
            r.save()
        r.close()
        dump = h.redis.workdir / "dump.rdb"
        if not persist and dump.exists():
            dump.unlink()
        before = h.accepted.copy()
        h.redis.restart()
        if not persist:
            # Everything is gone: the nodes keep their lists and must say so; the sync
            # process loses its lock and exits, as it must (an orchestrator restarts it).
            def regressed() -> bool:
                self.run(asyncio.sleep(0.05))
                return all(n.state() == "regressed" for n in h.nodes)

            # The sync process may exit meanwhile: its writer lock went with the data.
            h.wait_for(regressed, "the nodes saw the empty store", sync_may_exit=True)
            h.accepted, live = before, h.accepted
            self.check(ready=False)
            h.accepted = live
            if h.sync is not None:
                try:
                    h.sync.wait(15)
                except subprocess.TimeoutExpired:
                    h.stop_sync()
            h.sync = None
            h.present.clear()
            h.previous.clear()
            h.dirty.clear()
            h.stored = None  # the feed's seq in Redis is gone too; the master's goes on
            h.accepted = Lists()
            h.start_sync()
        self.after_write(f"restart redis {'with' if persist else 'without'} persistence")

    # Restarts are cheap to draw and slow to run: at most every third step, so that the
    # steps that change the lists get most of a run.
    @precondition(lambda self: self.h.steps % 3 == 1)
    @rule(persist=st.booleans())
    def restart_broker(self, persist: bool) -> None:
        h = self.h
        h.broker.stop()
        if not persist:
            for f in h.broker.workdir.glob("mosquitto.db*"):
                f.unlink()
        h.broker.start()
        h.wait_for(lambda: h.sync_metric("s13eir_sync_feed_connected") == 1, "the sync reconnected")
        h.touched |= set(self.rng.sample(POOL, 5))
        self.after_write(f"restart broker {'with' if persist else 'without'} persistence")

    @invariant()
    def sync_alive(self) -> None:
        if self.h.sync is not None:
            assert self.h.sync.poll() is None, self.h.sync_log.read_text()[-3000:]


def run_machine(
    tmp_path: Path,
    *,
    nodes: int,
    cluster: bool,
    examples: int,
    steps: int,
    seed: int | None = None,
    shrink: bool = True,
) -> None:
    """Run the machine for ``examples`` runs of up to ``steps`` steps (``seed``: Hypothesis's)."""
    require("redis-server")
    require("mosquitto")
    if cluster:
        require("redis-cli")
    machine = type(f"Machine{nodes}{'c' if cluster else ''}", (StoreEquivalence,),
                   {"NODES": nodes, "CLUSTER": cluster, "WORKDIR": tmp_path})  # fmt: skip
    if seed is not None:
        machine = hypothesis_seed(seed)(machine)
    test = machine.TestCase
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]
    test.settings = settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck), phases=phases)  # fmt: skip
    test("runTest").runTest()


EXAMPLES = int(os.environ.get("EQUIVALENCE_EXAMPLES", "2"))
STEPS = int(os.environ.get("EQUIVALENCE_STEPS", "6"))


@pytest.mark.timeout(600)
def test_one_node_answers_as_the_accepted_lists(tmp_path: Path) -> None:
    run_machine(tmp_path, nodes=1, cluster=False, examples=EXAMPLES, steps=STEPS)


@pytest.mark.timeout(600)
def test_two_nodes_on_a_redis_cluster_answer_as_the_accepted_lists(tmp_path: Path) -> None:
    run_machine(tmp_path, nodes=2, cluster=True, examples=max(1, EXAMPLES - 1), steps=STEPS)
