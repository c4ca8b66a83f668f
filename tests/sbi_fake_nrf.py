"""A fake NRF for the registration tests: an HTTP/2 (h2c prior knowledge) server on a free
loopback port that records every request and answers from a script."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeNrf:
    """``reply(request)`` decides each answer; the default behaves like a well NRF with a
    heartBeatTimer of ``heartbeat`` seconds."""

    heartbeat: int = 1
    requests: list[Recorded] = field(default_factory=list)
    reply: Callable[[Recorded], Reply] | None = None
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(lambda: _Protocol(self), "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def default_reply(self, req: Recorded) -> Reply:
        if req.method == "PUT":
            profile = {**req.json(), "heartBeatTimer": self.heartbeat}
            return 201, {"content-type": "application/json"}, json.dumps(profile).encode()
        return 204, {}, b""

    def answer(self, req: Recorded) -> Reply:
        return (self.reply or self.default_reply)(req)

    async def record(self, req: Recorded) -> None:
        async with self.arrived:
            self.requests.append(req)
            self.arrived.notify_all()

    async def wait_for(self, predicate: Callable[[list[Recorded]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: predicate(self.requests))

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]


class _Protocol(asyncio.Protocol):
    def __init__(self, nrf: FakeNrf) -> None:
        self.nrf = nrf
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = (dict(ev.headers or []), bytearray())  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id][1].extend(ev.data or b"")
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                headers, body = self.streams.pop(ev.stream_id)
                req = Recorded(headers[":method"], headers[":path"], headers, bytes(body))
                asyncio.get_running_loop().create_task(self.nrf.record(req))
                status, extra, payload = self.nrf.answer(req)
                out = [(":status", str(status)), *extra.items(), ("content-length", str(len(payload)))]
                self.conn.send_headers(ev.stream_id, out, end_stream=not payload)
                if payload:
                    self.conn.send_data(ev.stream_id, payload, end_stream=True)
        self.transport.write(self.conn.data_to_send())
