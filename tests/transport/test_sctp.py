"""S13 over SCTP (TS 29.272 §7.1.5), where the kernel has SCTP; skipped cleanly otherwise."""

from __future__ import annotations

import asyncio
import socket

import pytest
from diameter.message import Message

from s13eir.config_loading import config_from_mapping
from s13eir.diameter.framing import FrameBuffer
from s13eir.transport.sctp import IPPROTO_SCTP, sctp_available
from tests.conftest import node_config, running_node
from tests.diameter.test_peer_sansio import cer, ecr

pytestmark = pytest.mark.skipif(not sctp_available(), reason="this kernel has no SCTP support")


async def test_ecr_over_sctp() -> None:
    cfg = node_config(listen=[{"transport": "sctp", "address": "127.0.0.1", "port": 0}],
                      peers={"allow_unknown": True})  # fmt: skip
    async with running_node(config_from_mapping(cfg)) as rn:
        port = next(p for t, _, p in rn.node.bound if t == "sctp")

        def exchange() -> list[Message]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP) as s:
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                s.sendall(cer() + ecr("35209900176148"))
                buf, out = FrameBuffer(), []
                while len(out) < 2:
                    buf.feed(s.recv(65536))
                    while isinstance(f := buf.next_frame(), bytes):
                        out.append(Message.from_bytes(f))
                return out

        cea, eca = await asyncio.to_thread(exchange)
        assert cea.result_code == 2001
        assert eca.result_code == 2001 and eca.equipment_status == 1
