"""Detection shared by every node through Redis: one state per IMEI and one case per IMEI
for the whole cluster, so that a clone seen on node A and on node B is one finding.

Each node runs the same pure detector. A drained batch is grouped by IMEI; the node reads
the batch's states (one MGET), applies each IMEI's checks to its state and writes the
results back by compare-and-set (one Lua script for the whole batch; on Redis Cluster one
per IMEI, pipelined): two round trips per batch, never one per request. An IMEI whose
state another node changed in between comes back with the current value, and its checks
are applied again on that, in the next round of the same batch.
A finding counts only once its state is written, and the state carries what was already
reported, so each piece of evidence is reported once cluster-wide. Cases are kept the
same way (a JSON value per IMEI, and an index by first finding).

Redis keys, under ``store.redis.prefix`` ``P``: ``P:det:d:<imei14>`` the device state
(:mod:`s13eir.detection.device`, expiring after the longest rule window),
``P:det:case:<imei14>`` a case (JSON, kept until ``s13eir cases purge`` removes it
once closed long enough),
``P:det:cases`` a sorted set of the IMEIs with a case, by first finding, and
``P:det:actions`` a stream of the list changes the findings ask for (``greylist``,
``block``, the genuine owner's exception pair) and their undoing, which the writer
(``s13eir sync``, :mod:`s13eir.sync.detection_actions`) applies and audits.

When Redis cannot be reached, the batch is counted as dropped (``store``) and the answers
go on as before; the next batch tries again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from .backends.redis_client import AnyRedis
from .backends.redis_scripts import lua
from .detection.cases import Case, add_finding, plan_actions
from .detection.detector import Detector, Finding
from .detection.device import DeviceState, DeviceStateError
from .detection.observation import Observation, TacInfo


def actions_key(prefix: str) -> str:
    """The stream of list changes detection asks of the writer (and their undoing)."""
    return f"{prefix}:det:actions"


def action_fields(action: dict[str, Any], by: str) -> dict[Any, Any]:
    return {"op": action["op"], "list": action["list"], "imei": action["imei"], "imsi": action["imsi"],
            "source": action["source"], "reason": action["reason"], "by": by}  # fmt: skip


T = TypeVar("T")
MAX_ROUNDS = 8  # compare-and-set rounds per batch; what still conflicts is counted, not retried forever
_TTL_MARGIN_S = 86400.0


class SharedDetection:
    def __init__(
        self,
        redis: AnyRedis,
        prefix: str,
        detector: Detector,
        tac_info: Callable[[str], TacInfo | None] | None = None,
    ) -> None:
        self.redis = redis
        self.detector = detector
        self.device_prefix = f"{prefix}:det:d:"
        self.case_prefix = f"{prefix}:det:case:"
        self.index_key = f"{prefix}:det:cases"
        self.actions_key = actions_key(prefix)
        self.ttl_ms = str(int((detector.horizon + _TTL_MARGIN_S) * 1000))
        self._cas = redis.register_script(lua("detection_cas"))
        self._delete_if_same = redis.register_script(lua("detection_delete_if_same"))
        self._cas_batch = None if isinstance(redis, RedisCluster) else redis.register_script(lua("detection_cas_batch"))
        self._tac_info = tac_info
        self.conflicts = 0  # IMEIs written again because another node changed them first
        self.unresolved = 0  # IMEIs given up after MAX_ROUNDS (their checks are lost)
        self.corrupt = 0  # states or cases that did not decode (replaced)

    # -- device states -------------------------------------------------------------------

    async def observe(self, batch: Iterable[Observation], now: float) -> list[Finding]:
        """Apply a batch to the shared states; the findings, each once cluster-wide.
        Raises RedisError when Redis cannot be reached (nothing is half-applied: a state
        is written whole or not at all)."""
        groups: dict[str, list[Observation]] = {}
        for obs in batch:
            groups.setdefault(obs.imei14, []).append(obs)
        expected = await self._read(self.device_prefix, list(groups))

        def apply(imei: str, old: bytes) -> tuple[bytes, list[Finding]]:
            state = self._state(old, imei)
            findings = [f for o in groups[imei] for f in self.detector.apply(state, o, now)]
            return state.encode(), findings  # encoded after the checks are applied

        return [f for found in await self._cas_rounds(self.device_prefix, expected, apply, self.ttl_ms) for f in found]

    async def _cas_rounds(self, prefix: str, expected: dict[str, bytes],
                          compute: Callable[[str, bytes], tuple[bytes, T]], ttl_ms: str) -> list[T]:  # fmt: skip
        """``compute`` (the new value from the old, and what it yields) written by
        compare-and-set for each IMEI, in rounds: an IMEI another writer changed in
        between is computed again on its current value. What the written ones yielded."""
        done: list[T] = []
        for _ in range(MAX_ROUNDS):
            if not expected:
                break
            written = {imei: compute(imei, old) for imei, old in expected.items()}
            replies = await self._cas_all(prefix, expected, written, ttl_ms)
            retry: dict[str, bytes] = {}
            for (imei, (_, result)), reply in zip(written.items(), replies, strict=True):
                if reply == 1:
                    done.append(result)
                else:
                    retry[imei] = reply
            self.conflicts += len(retry)
            expected = retry
        self.unresolved += len(expected)
        return done

    async def _read(self, prefix: str, imeis: list[str]) -> dict[str, bytes]:
        raw: Any = await self.redis.mget([prefix + i for i in imeis]) if imeis else []
        return {i: (r or b"") for i, r in zip(imeis, raw, strict=True)}

    async def _cas_all(self, prefix: str, expected: dict[str, bytes], new: dict[str, tuple[bytes, Any]],
                       ttl_ms: str) -> list[Any]:  # fmt: skip
        """A compare-and-set per IMEI, in one call (one pipeline on a cluster): 1 or the
        current value each."""
        if self._cas_batch is not None:
            args: list[bytes | str] = [prefix, ttl_ms]
            for imei, old in expected.items():
                args += (imei, old, new[imei][0])
            replies: list[Any] = await self._cas_batch(args=args)
            return replies
        pipe: Any
        async with self.redis.pipeline(transaction=False) as pipe:  # redis-py types a script's client without pipelines
            for imei, old in expected.items():
                await self._cas(keys=[prefix + imei], args=[old, new[imei][0], ttl_ms], client=pipe)
            replies = [r if r == 1 else r[0] for r in await pipe.execute()]
        return replies

    def _state(self, data: bytes, imei: str) -> DeviceState:
        if not data:
            return self.detector.new_state()
        try:
            return DeviceState.decode(data, imei, self.detector.config.max_recent)
        except DeviceStateError:
            self.corrupt += 1  # written by another version, or damaged: start the device again
            return self.detector.new_state()

    # -- cases ---------------------------------------------------------------------------

    async def add_cases(self, findings: list[Finding], genuine_owner: str = "none") -> list[Case]:
        """Open or update the case of each finding's IMEI; the cases as written. The list
        changes the findings ask for (``greylist``/``block``: :func:`plan_actions`) are
        recorded on the case and queued for the writer (``P:det:actions``, applied by
        ``s13eir sync``), once each."""
        by_imei: dict[str, list[Finding]] = {}
        for f in findings:
            by_imei.setdefault(f.imei14, []).append(f)
        planned: dict[str, list[dict[str, Any]]] = {}

        def update(imei: str, case: Case | None) -> Case:
            planned[imei] = []  # a compare-and-set round lost is planned again on the winner's case
            for f in by_imei[imei]:
                info = self._tac_info(imei[:8]) if case is None and self._tac_info is not None else None
                case = add_finding(case, f, info)
                planned[imei] += plan_actions(case, f, genuine_owner)
            assert case is not None
            return case

        cases = await self._update_cases(list(by_imei), update)
        async with self.redis.pipeline(transaction=False) as pipe:
            for case in cases:
                pipe.zadd(self.index_key, {case.imei14: case.first}, nx=True)
                for action in planned.get(case.imei14, []):
                    pipe.xadd(self.actions_key, action_fields(action, by="detection"))
            await pipe.execute()
        return cases

    async def request_undo(self, imei: str, at: float, by: str, note: str) -> Case | None:
        """Undo the list changes detection asked for on ``imei``'s case: each one removed
        by the writer (only its own entry: the source is the rule's), the case closed and
        suppressed (later findings on it change no list). None when it has no case."""
        if await self.get(imei) is None:
            return None
        undo: list[dict[str, Any]] = []

        def update(_: str, case: Case | None) -> Case:
            assert case is not None
            undo.clear()
            for a in case.actions:
                if a["op"] == "add" and a["state"] in ("requested", "applied"):
                    undo.append(dict(a, op="remove"))
                    a["state"] = "undo requested"
            case.suppressed = True
            case.close(at, by, note)
            return case

        done = await self._update_cases([imei], update)
        if not done:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in undo:
                pipe.xadd(self.actions_key, action_fields(a, by=by))
            await pipe.execute()
        return done[0]

    async def set_action_state(self, imei: str, list_name: str, imsi: str, state: str) -> None:
        """The writer's outcome for one of the case's changes (``s13eir sync``)."""

        def update(_: str, case: Case | None) -> Case:
            assert case is not None
            for a in case.actions:
                if a["list"] == list_name and a["imsi"] == imsi:
                    a["state"] = state
            return case

        if await self.get(imei) is not None:
            await self._update_cases([imei], update)

    async def close(self, imei: str, at: float, by: str, note: str) -> Case | None:
        """Close the case of ``imei``; None when it has none (cases are never deleted)."""
        if await self.get(imei) is None:
            return None

        def update(_: str, case: Case | None) -> Case:
            assert case is not None
            case.close(at, by, note)
            return case

        closed = await self._update_cases([imei], update)
        return closed[0] if closed else None

    async def _update_cases(self, imeis: list[str], update: Callable[[str, Case | None], Case]) -> list[Case]:
        def apply(imei: str, old: bytes) -> tuple[bytes, Case]:
            case = update(imei, self._case(old))
            return json.dumps(case.as_dict(), separators=(",", ":")).encode(), case

        return await self._cas_rounds(self.case_prefix, await self._read(self.case_prefix, imeis), apply, "0")

    def _case(self, data: bytes) -> Case | None:
        if not data:
            return None
        try:
            return Case.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError):
            self.corrupt += 1
            return None

    async def get(self, imei: str) -> Case | None:
        raw: Any = await self.redis.get(self.case_prefix + imei)
        return self._case(raw or b"")

    async def all(self, limit: int = 10_000) -> list[Case]:
        """The cases by first finding (at most ``limit``)."""
        members: Any = await self.redis.zrange(self.index_key, 0, limit - 1)
        if not members:
            return []
        raw: Any = await self.redis.mget([self.case_prefix + i.decode() for i in members])
        cases = [c for c in (self._case(r or b"") for r in raw) if c is not None]
        return sorted(cases, key=lambda c: (c.first, c.imei14))

    async def purge(self, closed_before: float) -> int:
        """Delete the cases closed before ``closed_before`` (epoch seconds) and not opened
        again since; how many. A case still open, or reopened, stays."""
        r: Any = self.redis
        gone = 0
        members = [m.decode() for m in await r.zrange(self.index_key, 0, -1)]
        for start in range(0, len(members), 1000):
            imeis = members[start : start + 1000]
            for imei, raw in zip(imeis, await r.mget([self.case_prefix + i for i in imeis]), strict=True):
                case = self._case(raw or b"")
                if case is None or case.status != "closed" or case.closed is None:
                    continue
                if case.closed["at"] >= closed_before:
                    continue
                # Only if unchanged since read: a finding that reopened it meanwhile keeps it.
                if await self._delete_if_same(keys=[self.case_prefix + imei], args=[raw]) == 1:
                    await r.zrem(self.index_key, imei)
                    gone += 1
        return gone

    async def count(self) -> int:
        n: int = await self.redis.zcard(self.index_key)
        return n


__all__ = ["MAX_ROUNDS", "RedisError", "SharedDetection"]
