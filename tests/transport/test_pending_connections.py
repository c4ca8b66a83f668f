"""Before CER nobody is authenticated: the connections that have not completed it are
capped together (diameter.max_pending_connections); past the cap a new connection is
closed at once and counted, and the peers that did complete CER are not affected."""

from __future__ import annotations

import asyncio

import pytest

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import node_config, running_node
from tests.mme import Mme

pytestmark = pytest.mark.timeout(30)


async def closed_at_once(m: Mme) -> bool:
    """The server closed (or reset) the connection without sending anything."""
    try:
        chunk = await asyncio.wait_for(m.reader.read(1), 2)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return chunk == b""


async def test_connections_awaiting_cer_are_capped() -> None:
    cfg = config_from_mapping(node_config(diameter={"max_pending_connections": 3, "cer_timeout_s": 10}))
    async with running_node(cfg) as rn:
        peer = await Mme.open(rn.host, rn.port)  # completed CER: never counted
        idle = [await Mme.connect(rn.host, rn.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        extra = await Mme.connect(rn.host, rn.port)
        assert await closed_at_once(extra)
        assert rn.node.metrics.connections_refused == 1
        ans = await peer.request(M.to_bytes(M.ecr()))  # the open peer is served as before
        assert ans.result_code == 2001
        # One of the idle ones completes CER: room for a new one again.
        cea = await idle[0].request(M.to_bytes(M.cer(origin_host="mme2.s13eir.test")))
        assert cea.result_code == 2001
        again = await Mme.open(rn.host, rn.port, origin_host="mme2.s13eir.test", state_id=9)
        assert (await again.request(M.to_bytes(M.ecr(origin_host="mme2.s13eir.test")))).result_code == 2001
        for m in (peer, *idle, extra, again):
            m.writer.close()
