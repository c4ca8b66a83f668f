"""SIGHUP reloads what can change live: peers (a new one is admitted, a removed one gets
DPR), policy (both interfaces), logging.log_whitelisted/mask_imsi, the list files; a file
that does not validate changes nothing; what needs a restart is named."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from s13eir.client import S13Client
from s13eir.config_loading import load_config
from s13eir.node import Node
from s13eir.observability.logs import configure_logging
from tests import mme as M
from tests.conftest import MME_REALM, node_config
from tests.lists.test_redis_node import redis_config, seed
from tests.mme import Mme

UNLISTED = "35450712345675"


async def verdict(node: Node, host: str, imei: str = UNLISTED) -> str:
    port = next(p for t, _, p in node.bound if t == "tcp")
    c = S13Client(host, MME_REALM, timeout=3)
    await c.connect("127.0.0.1", port)
    try:
        return (await c.check(imei)).verdict
    finally:
        await c.disconnect()


async def status(m: Mme) -> int | None:
    ans = await m.request(M.to_bytes(M.ecr(UNLISTED, origin_host="mme2.s13eir.test")))
    assert ans.result_code == 2001
    return ans.equipment_status


async def test_sighup_reloads_peers_and_policy_and_refuses_a_bad_file(tmp_path: Path) -> None:
    cfg: dict[str, Any] = node_config()
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    node = Node(load_config(path, environ={}), str(path))
    await node.start()
    try:
        port = next(p for t, _, p in node.bound if t == "tcp")
        stays = await Mme.open("127.0.0.1", port, origin_host="mme2.s13eir.test")
        removed = await Mme.open("127.0.0.1", port)  # MME_HOST, which the new file drops
        try:
            assert await status(stays) == M.WHITELISTED
            new = copy.deepcopy(cfg)
            new["peers"]["list"] = [{"origin_host": "mme2.s13eir.test", "origin_realm": MME_REALM},
                                    {"origin_host": "mme9.s13eir.test", "origin_realm": MME_REALM}]  # fmt: skip
            new["policy"] = {"unknown_imei": "greylisted"}
            new["listen"][0]["port"] = 1  # needs a restart: named, not applied
            path.write_text(yaml.safe_dump(new))
            with structlog.testing.capture_logs() as logs:
                assert await node.reload()
            done = next(e for e in logs if e["event"] == "config_reloaded")
            assert done["applied"] == ["peers", "policy"] and done["restart_needed"] == ["listen"]
            # The removed peer gets DPR (cause DO_NOT_WANT_TO_TALK_TO_YOU), answered, then closed.
            dpr = M.split(await removed.read_frame())[0]
            assert int.from_bytes(dpr[5:8], "big") == M.CMD_DPR
            assert await verdict(node, "mme9.s13eir.test") == "GREYLISTED"  # new peer, new policy
            assert await status(stays) == M.GREYLISTED  # the connection that stays, the new policy
            # A file that does not validate: nothing changes, and the log says why.
            path.write_text("peers: [this is not a mapping\n")
            with structlog.testing.capture_logs() as logs:
                assert not await node.reload()
            assert any(e["event"] == "config_reload_failed" for e in logs)
            assert await verdict(node, "mme9.s13eir.test") == "GREYLISTED"
        finally:
            await stays.close()
            await removed.close()
    finally:
        await node.stop()
        await asyncio.sleep(0)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_reloads_under_load_fail_no_answer(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """An MME pipelines ECRs (an unlisted and a blacklisted phone) while the configuration
    is reloaded ten times, alternating policy.unknown_imei and the peer list (a peer added,
    then removed again): every request is answered on the same connection, every listed
    phone BLACKLISTED, every unlisted one per one of the two policies, and those answered
    after the last reload per the last. Both stores (on Redis the listed phone's answer
    waits for a lookup)."""
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        seed(server)
        cfg: dict[str, Any] = redis_config(server)
        # Not a test of outages: a lookup that outlasts timeout_ms on a loaded machine would
        # get policy.store_unavailable's verdict (GREYLISTED) instead of the list's.
        cfg["store"]["redis"]["timeout_ms"] = 5000
    else:
        cfg = node_config()
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    node = Node(load_config(path, environ={}), str(path))
    await node.start()
    black = "35209900176148"
    try:
        port = next(p for t, _, p in node.bound if t == "tcp")
        m = await Mme.open("127.0.0.1", port)
        sent: dict[int, str] = {}
        answers: dict[int, M.Answer] = {}
        stop = asyncio.Event()

        async def reader() -> None:
            while len(answers) < len(sent) or not stop.is_set():
                a = await m.read_answer(timeout=10)
                if a.is_request and a.command == M.CMD_DWR:
                    await m.send(M.dwa_for(a))
                    continue
                assert not a.is_request, a  # no DPR: this peer stays in every version
                answers[a.hbh] = a

        read = asyncio.ensure_future(reader())
        for i in range(10):
            batch = [M.ecr(black if k % 4 == 0 else UNLISTED) for k in range(200)]
            for req in batch:
                sent[req.header.hop_by_hop_identifier] = "black" if req.terminal_information.imei == black else "white"
            await m.send(b"".join(M.to_bytes(r) for r in batch))
            new = copy.deepcopy(cfg)
            new["policy"] = {"unknown_imei": "greylisted" if i % 2 == 0 else "whitelisted"}
            if i % 2 == 0:
                new["peers"]["list"] = [*cfg["peers"]["list"], {"origin_host": "mme9.s13eir.test",
                                                                "origin_realm": MME_REALM}]  # fmt: skip
            path.write_text(yaml.safe_dump(new))
            assert await node.reload()
            await asyncio.sleep(0.02)  # the node reads on meanwhile (a Redis-mode reload never yields)
        last = [M.ecr(UNLISTED) for _ in range(50)]  # after the last reload (whitelisted)
        for req in last:
            sent[req.header.hop_by_hop_identifier] = "last"
        await m.send(b"".join(M.to_bytes(r) for r in last))
        stop.set()
        await asyncio.wait_for(read, 20)
        assert answers.keys() == sent.keys()
        for hbh, kind in sent.items():
            a = answers[hbh]
            assert a.result_code == 2001, a
            if kind == "black":
                assert a.equipment_status == M.BLACKLISTED
            elif kind == "white":
                assert a.equipment_status in (M.WHITELISTED, M.GREYLISTED)
            else:
                assert a.equipment_status == M.WHITELISTED
        assert {a.equipment_status for h, a in answers.items() if sent[h] == "white"} == {M.WHITELISTED, M.GREYLISTED}
        await m.close()
    finally:
        await node.stop()
        await asyncio.sleep(0)


async def test_sighup_changes_the_log_level_live(tmp_path: Path) -> None:
    configure_logging("warning", "json")  # as s13eir serve does before the node starts
    cfg: dict[str, Any] = node_config(logging={"level": "warning"})
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    node = Node(load_config(path, environ={}), str(path))
    await node.start()
    try:
        assert not node.log.is_enabled_for(logging.INFO)
        path.write_text(yaml.safe_dump({**cfg, "logging": {"level": "info"}}))
        with structlog.testing.capture_logs() as logs:
            assert await node.reload()
        done = next(e for e in logs if e["event"] == "config_reloaded")
        assert done["applied"] == ["logging"] and done["restart_needed"] is None
        assert node.log.is_enabled_for(logging.INFO) and node.reporting._log_verdicts
        path.write_text(yaml.safe_dump({**cfg, "logging": {"level": "info", "format": "console"}}))
        with structlog.testing.capture_logs() as logs:
            assert await node.reload()
        done = next(e for e in logs if e["event"] == "config_reloaded")
        assert done["restart_needed"] == ["logging.format"]
        path.write_text(yaml.safe_dump(cfg))
        assert await node.reload()
        assert not node.log.is_enabled_for(logging.INFO) and not node.reporting._log_verdicts
    finally:
        await node.stop()
        await asyncio.sleep(0)
        structlog.reset_defaults()


@pytest.mark.parametrize(
    "section", [{"logging": {"log_whitelisted": True}}, {"policy": {"check_destination_realm": True}}],
    ids=["log_whitelisted", "check_destination_realm"],
)  # fmt: skip
async def test_a_reload_that_rules_out_the_fast_path_applies_to_open_connections(
    tmp_path: Path, section: dict[str, Any]
) -> None:
    """The fast path answers unlisted phones without logging them or comparing
    Destination-Realm. A reload that turns on either must take it away from the
    connections already open, not only from new ones: afterwards a whitelisted answer is
    logged, and an ECR to another realm gets 3003 DIAMETER_REALM_NOT_SERVED."""
    cfg: dict[str, Any] = node_config()
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    node = Node(load_config(path, environ={}), str(path))
    await node.start()
    try:
        port = next(p for t, _, p in node.bound if t == "tcp")
        m = await Mme.open("127.0.0.1", port)
        try:
            await status_of(m, UNLISTED)
            fast_before = node.app.whitelisted_fast
            assert fast_before >= 1  # it was served by the fast path
            path.write_text(yaml.safe_dump({**cfg, **section}))
            assert await node.reload()
            with structlog.testing.capture_logs() as logs:
                ans = await m.request(M.to_bytes(M.ecr(UNLISTED, destination_realm="elsewhere.test")))
            assert node.app.whitelisted_fast == fast_before  # the full path answered
            if "logging" in section:
                assert ans.equipment_status == M.WHITELISTED
                assert [e["status"] for e in logs if e["event"] == "verdict"] == ["WHITELISTED"]
            else:
                assert ans.result_code == 3003, ans
        finally:
            await m.close()
    finally:
        await node.stop()
        await asyncio.sleep(0)


async def status_of(m: Mme, imei: str) -> int | None:
    ans = await m.request(M.to_bytes(M.ecr(imei)))
    assert ans.result_code == 2001
    return ans.equipment_status
