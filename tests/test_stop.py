"""A stop that loses nothing: on stop (SIGTERM), requests in flight are answered, the
DPR goes out, and requests still arriving until the peer's DPA are answered too: every
request an MME sent before the connection closed has its answer. Embedded and Redis
stores (where answers wait for a lookup)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import node_config, running_node
from tests.lists.test_redis_node import BLACK, redis_config, seed
from tests.mme import Answer, Mme
from tests.services import RedisServer

pytestmark = pytest.mark.timeout(60)


async def pipelined_mme(m: Mme, imeis: list[str], stop_after: float, node_stop: Any) -> tuple[set[int], set[int]]:
    """Send ECRs back to back; when stop_after seconds have passed, stop the node (as SIGTERM
    does) while sending on. On the DPR: answer it with a DPA and send nothing more.
    Returns (hop-by-hop ids sent, ids answered)."""
    sent: set[int] = set()
    answered: set[int] = set()
    got_dpr = asyncio.Event()

    async def reader() -> None:
        while True:
            try:
                frame = await m.read_frame(timeout=10)
            except M.Closed:
                return
            a = Answer.parse(frame)
            if a.is_request and a.command == M.CMD_DPR:
                got_dpr.set()
                await m.send(M.dpa_for(a))
            elif a.is_request and a.command == M.CMD_DWR:
                await m.send(M.dwa_for(a))
            elif a.command == M.CMD_ECR:
                assert a.result_code == 2001, a
                answered.add(a.hbh)

    read = asyncio.ensure_future(reader())
    stopper: asyncio.Future[Any] | None = None
    t0 = time.monotonic()
    deadline = t0 + 20
    i = 0
    while not got_dpr.is_set() and time.monotonic() < deadline:
        batch = [M.ecr(imeis[(i + k) % len(imeis)]) for k in range(20)]
        i += 20
        for req in batch:
            sent.add(req.header.hop_by_hop_identifier)
        await m.send(b"".join(M.to_bytes(r) for r in batch))
        if stopper is None and time.monotonic() - t0 > stop_after:
            stopper = asyncio.ensure_future(node_stop())
        await asyncio.sleep(0)
    await asyncio.wait_for(read, 15)
    if stopper is not None:
        await asyncio.wait_for(stopper, 15)
    return sent, answered


@pytest.mark.parametrize("store", ["embedded", "redis"])
async def test_every_request_sent_before_the_close_is_answered(store: str, redis_server: RedisServer) -> None:
    if store == "redis":
        seed(redis_server)
        cfg = redis_config(redis_server)
        imeis = [BLACK, "35209900176155", "35290611000001", "35450712345675"]  # Bloom positives: deferred
    else:
        cfg = node_config()
        imeis = [M.IMEI_BLACK, M.IMEI_UNLISTED]
    async with running_node(config_from_mapping(cfg)) as rn:
        m = await Mme.open(rn.host, rn.port)
        try:
            sent, answered = await pipelined_mme(m, imeis, 0.3, rn.node.stop)
        finally:
            await m.close()
    assert len(sent) > 100
    assert sent == answered, f"{len(sent - answered)} of {len(sent)} requests got no answer"
