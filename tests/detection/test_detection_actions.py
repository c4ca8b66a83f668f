"""The actions of the detection rules, end to end on real processes: two nodes and the
writer (``s13eir sync``) on one redis-server, and a mosquitto broker for the fraud desk.
A clone whose rule blocks is listed by the writer for everyone but the IMSI judged
genuine, audited, published, and undone by an analyst, after which a new finding on it
changes no list; the writer never removes an entry it did not make."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import redis.asyncio as aioredis

from s13eir.cli import main
from s13eir.config_loading import config_from_mapping
from s13eir.sync.detection_actions import DetectionActions, k_audit
from s13eir.sync.process import SyncProcess
from tests import mme as M
from tests.conftest import RunningNode, running_node
from tests.detection.test_node_detection import CLONED, PEERS
from tests.lists.test_redis_node import redis_config, seed
from tests.services import MosquittoBroker, RedisServer

OWNER, CLONE, THIRD = "214010000000001", "214010000000002", "214010000000003"


def node_cfg(server: RedisServer, broker: MosquittoBroker) -> dict[str, Any]:
    cfg = redis_config(server)
    cfg["peers"] = {"list": PEERS}
    cfg["detection"] = {"enabled": True, "rules": {"time_distance": {"action": "block"}}}
    cfg["events"] = {"url": broker.url}
    return cfg


async def status(rn: RunningNode, host: str, imei: str, imsi: str) -> int:
    m = await M.Mme.open(rn.host, rn.port, origin_host=host)
    try:
        ans = await m.request(M.to_bytes(M.ecr(imei, imsi, origin_host=host)))
        assert ans.result_code == 2001
        return int(ans.equipment_status)
    finally:
        await m.close()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def case(r: aioredis.Redis) -> dict[str, Any]:
    raw = await r.get(f"s13eir:det:case:{CLONED}")
    return json.loads(raw) if raw else {}


async def test_a_blocked_clone_is_listed_but_for_its_owner_audited_published_and_undone(
    redis_server: RedisServer, mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    seed(redis_server)
    cfg = node_cfg(redis_server, mqtt_broker)
    sync = SyncProcess(config_from_mapping({**cfg, "sync": {"metrics": {"port": 0}}}), lock_poll_s=0.05)
    sync_run = asyncio.ensure_future(sync.run())
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        async with (
            aiomqtt.Client("127.0.0.1", mqtt_broker.port) as desk,
            running_node(config_from_mapping(cfg)) as a,
            running_node(config_from_mapping(cfg)) as b,
        ):
            await desk.subscribe("s13eir/detection/#", qos=1)
            # The owner in Madrid on node A, the clone in Barcelona on node B: both pass.
            assert await status(a, "mme1.s13eir.test", CLONED, OWNER) == M.WHITELISTED

            async def seen() -> bool:  # the owner's check in the shared state before the clone's
                return bool(await r.exists(f"s13eir:det:d:{CLONED}"))

            await until("the owner's check reached the shared state", seen)
            assert await status(b, "mme2.s13eir.test", CLONED, CLONE) == M.WHITELISTED

            async def applied() -> bool:
                acts = (await case(r)).get("actions", [])
                return len(acts) == 2 and all(x["state"] == "applied" for x in acts)

            await until("the writer applied the block and the owner's exception", applied)
            acts = (await case(r))["actions"]
            assert {(x["list"], x["imsi"], x["source"]) for x in acts} == {
                ("black", "", "detection:time_distance"), ("exceptions", OWNER, "detection:time_distance")
            }  # fmt: skip

            async def listed() -> bool:
                return await status(a, "mme2.s13eir.test", CLONED, CLONE) == M.BLACKLISTED

            await until("the clone refused on every node", listed)
            assert await status(b, "mme2.s13eir.test", CLONED, CLONE) == M.BLACKLISTED
            assert await status(b, "mme1.s13eir.test", CLONED, OWNER) == M.WHITELISTED  # the owner keeps service
            event = json.loads((await asyncio.wait_for(anext(aiter(desk.messages)), 10)).payload)  # type: ignore[arg-type]
            assert event["rule"] == "time_distance" and event["action"] == "block" and event["imei"] == CLONED
            assert event["imsis"] == [OWNER, CLONE]
            audit = await r.xrange(k_audit("s13eir"))
            assert [(f[b"op"], f[b"list"], f[b"outcome"], f[b"by"]) for _, f in audit] == [
                (b"add", b"black", b"applied", b"detection"), (b"add", b"exceptions", b"applied", b"detection")
            ]  # fmt: skip

            # The owner back on Madrid after the clone: A, B, A on two peers is concurrent use
            # (observe); let it reach the case before the analyst closes it.
            async def both_rules() -> bool:
                return set((await case(r)).get("rules", {})) == {"time_distance", "concurrent_use"}

            await until("concurrent use on the case", both_rules)
            # An analyst finds the owner's second phone: undone, through the writer.
            config_path = tmp_path / "eir.yaml"
            config_path.write_text(json.dumps(cfg))  # YAML reads JSON
            assert await asyncio.to_thread(main, ["cases", "undo", CLONED, "--config", str(config_path),
                                                  "--note", "owner's second phone", "--by", "ana"]) == 0  # fmt: skip

            async def undone() -> bool:
                c = await case(r)
                return c["status"] == "closed" and all(x["state"] == "undone" for x in c["actions"])

            await until("the writer undid both changes", undone)

            async def trimmed() -> bool:  # what is applied is in P:audit and on the case
                return int(await r.xlen("s13eir:det:actions")) == 0

            await until("the applied requests trimmed", trimmed)

            async def served_again() -> bool:
                return await status(a, "mme2.s13eir.test", CLONED, CLONE) == M.WHITELISTED

            await until("the clone served again once undone", served_again)
            audit = await r.xrange(k_audit("s13eir"))
            assert [(f[b"op"], f[b"outcome"], f[b"by"]) for _, f in audit[2:]] == [
                (b"remove", b"undone", b"ana"), (b"remove", b"undone", b"ana")
            ]  # fmt: skip
            # A new subscriber far away: a new finding reopens the case, but changes no list.
            assert await status(b, "mme2.s13eir.test", CLONED, THIRD) == M.WHITELISTED
            assert await status(a, "mme1.s13eir.test", CLONED, OWNER) == M.WHITELISTED

            async def reopened() -> bool:
                return (await case(r)).get("reopened") == 1

            await until("the case reopened", reopened)
            c = await case(r)
            assert c["status"] == "open" and c["suppressed"] and len(c["actions"]) == 2
            await asyncio.sleep(0.5)
            assert len(await r.xrange(k_audit("s13eir"))) == 4
    finally:
        sync.stop.set()
        await asyncio.wait_for(sync_run, 10)
        await r.aclose()


async def test_the_writer_refuses_what_detection_may_not_do_and_keeps_others_entries(
    redis_server: RedisServer, mqtt_broker: MosquittoBroker
) -> None:
    seed(redis_server)  # BLACK is on the blacklist from "test-feed", with the pair BLACK + 001010000000001
    cfg = node_cfg(redis_server, mqtt_broker)
    sync = SyncProcess(config_from_mapping({**cfg, "sync": {"metrics": {"port": 0}}}), lock_poll_s=0.05)
    sync_run = asyncio.ensure_future(sync.run())
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        deadline = time.monotonic() + 10
        while sync.writer is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        actions = DetectionActions(r, "s13eir", sync.writer)
        base = {"imei": "35209900176148", "imsi": "", "reason": "x", "by": "detection"}
        # A removal that is not detection's: refused. One of detection's own on an IMEI
        # the feed listed: only detection's record goes, the feed's entry stays.
        assert await actions.apply({**base, "op": "remove", "list": "black", "source": "test-feed"}) == "refused"
        assert await actions.apply({**base, "op": "add", "list": "white", "source": "detection:x"}) == "refused"
        assert (
            await actions.apply({**base, "op": "add", "list": "black", "source": "detection:time_distance"})
            == "applied"
        )
        assert (
            await actions.apply({**base, "op": "remove", "list": "black", "source": "detection:time_distance"})
            == "undone"
        )
        # An exception pair an operator made is not taken over (and so never undone).
        pair = {**base, "imsi": "001010000000001", "op": "add", "list": "exceptions", "source": "detection:x"}
        assert await actions.apply(pair) == "present"
        async with running_node(config_from_mapping(cfg)) as rn:  # the feed's entry and pair stand
            assert await status(rn, "mme1.s13eir.test", "35209900176148", "001010000000009") == M.BLACKLISTED
            assert await status(rn, "mme1.s13eir.test", "35209900176148", "001010000000001") == M.WHITELISTED
        assert actions.outcomes == {"refused": 2, "applied": 1, "undone": 1, "present": 1}
    finally:
        sync.stop.set()
        await asyncio.wait_for(sync_run, 10)
        await r.aclose()
