"""Detection shared through a real redis-server is proven equal to the embedded detector.

A hypothesis state machine runs two or three nodes' :class:`SharedDetection` (each with
its own client; some writing a batch in one script, some one script per IMEI as on Redis
Cluster) on one Redis,
and one embedded :class:`Detector` as the reference. Checks of a few IMEIs (every rule's
pattern can form: many IMSIs, peers far apart, repeats, software versions, test TACs)
queue on a node and are flushed as that node's batch. Flushed one node after another,
the findings and every device state in Redis equal the reference's fed the same batches
in the same order. Flushed by two nodes at once, each IMEI's result must be one of the
two orders applied whole (no lost update, no finding made twice or lost).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s13eir.detection.detector import Detector, Finding
from s13eir.detection.device import DeviceState
from s13eir.detection.observation import Observation, Rat
from s13eir.detection.rules import ConcurrentUse, DailyAverage, DetectionConfig, DistinctImsis, Rules
from s13eir.detection_shared import SharedDetection
from tests.detection.test_detector import PEERS, imsi
from tests.services import RedisServer, require

CONFIG = DetectionConfig(
    enabled=True,
    max_recent=6,
    rules=Rules(
        distinct_imsis=DistinctImsis(threshold=3, window_days=1),
        daily_average=DailyAverage(threshold=1.5, min_seen_days=2, period_days=3),
        concurrent_use=ConcurrentUse(within_s=600),
    ),
)
IMEIS = ["35209900176148", "35450712345675", "00101500000017"]  # the last a test TAC
_RUNS = itertools.count()


def key(f: Finding) -> tuple[Any, ...]:
    return (
        f.imei14,
        f.rule,
        f.imsis,
        f.detail,
        tuple((o.t, o.imsi, o.peer, o.rat.value, o.sv, o.imei15) for o in f.evidence),
    )


def copy(state: DeviceState, imei: str) -> DeviceState:
    return DeviceState.decode(state.encode(), imei, CONFIG.max_recent)


class SharedEquivalence(RuleBasedStateMachine):
    URL = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"eq{next(_RUNS)}"
        self.reference = Detector(CONFIG, PEERS)
        self.nodes: list[SharedDetection] = []
        self.pending: list[list[Observation]] = []
        self.t = 1.7e9

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize(batched=st.lists(st.booleans(), min_size=2, max_size=3))
    def setup(self, batched: list[bool]) -> None:
        for one_script in batched:
            node = SharedDetection(aioredis.Redis.from_url(self.URL), self.prefix, Detector(CONFIG, PEERS))
            if not one_script:
                node._cas_batch = None  # as on Redis Cluster: a script per IMEI, pipelined
            self.nodes.append(node)
            self.pending.append([])

    def teardown(self) -> None:
        try:
            for n in self.nodes:
                self.run(n.redis.aclose())
        finally:
            self.loop.close()

    @rule(node=st.integers(0, 2), checks=st.lists(st.tuples(
        st.sampled_from(IMEIS), st.one_of(st.none(), st.integers(0, 4)), st.sampled_from(sorted(PEERS)),
        st.sampled_from(list(Rat)), st.sampled_from([None, "01", "03", "99"]), st.sampled_from([None, "0", "7"]),
        st.sampled_from([0.0, 20.0, 61.0, 900.0, 5000.0, 90000.0])), min_size=1, max_size=8))  # fmt: skip
    def check(self, node: int, checks: list[tuple[str, int | None, str, Rat, str | None, str | None, float]]) -> None:
        for imei, who, peer, rat, sv, d15, dt in checks:
            self.t += dt
            obs = Observation(self.t, imei, None if who is None else imsi(who), peer, rat, sv,
                              None if d15 is None else imei + d15)  # fmt: skip
            self.pending[node % len(self.nodes)].append(obs)

    @rule(node=st.integers(0, 2))
    def flush(self, node: int) -> None:
        i = node % len(self.nodes)
        batch, self.pending[i] = self.pending[i], []
        now = self.t
        got = self.run(self.nodes[i].observe(batch, now))
        want = [f for o in batch for f in self.reference.observe(o, now)]
        assert sorted(map(key, got)) == sorted(map(key, want))

    @precondition(lambda self: len(self.nodes) >= 2)
    @rule()
    def flush_two_at_once(self) -> None:
        a, b = self.pending[0], self.pending[1]
        self.pending[0], self.pending[1] = [], []
        now = self.t

        async def both() -> tuple[list[Finding], list[Finding]]:
            fa, fb = await asyncio.gather(self.nodes[0].observe(a, now), self.nodes[1].observe(b, now))
            return fa, fb

        fa, fb = self.run(both())
        got = sorted(map(key, fa + fb))
        want: list[Finding] = []
        for imei in {o.imei14 for o in a + b}:
            start = self.reference._devices.get(imei)
            stored = self.stored(imei)
            outcomes = []
            for first, second in ((a, b), (b, a)):
                state = copy(start, imei) if start is not None else self.reference.new_state()
                found = [f for o in first + second if o.imei14 == imei for f in self.reference.apply(state, o, now)]
                outcomes.append((state, found))
            match = [(s, f) for s, f in outcomes if s == stored]
            assert match, f"{imei}: the state in Redis is neither order applied whole"
            state, found = match[0]
            self.reference._devices[imei] = state
            want += found
        assert got == sorted(map(key, want))

    def stored(self, imei: str) -> DeviceState | None:
        raw = self.run(self.nodes[0].redis.get(self.nodes[0].device_prefix + imei))
        return None if raw is None else DeviceState.decode(raw, imei, CONFIG.max_recent)

    @invariant()
    def states_equal_the_reference(self) -> None:
        for imei in IMEIS:
            assert self.stored(imei) == self.reference._devices.get(imei), imei


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require("redis-server")
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_shared_detection_equals_the_embedded_detector(redis_url: str) -> None:
    machine = type("Machine", (SharedEquivalence,), {"URL": redis_url})
    test = machine.TestCase
    test.settings = settings(max_examples=25, stateful_step_count=40, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))  # fmt: skip
    test("runTest").runTest()
