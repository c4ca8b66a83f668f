"""A node's Diameter peer in memory, for the tests that need no socket.

``VirtualEir(config)`` builds a node (not started: its peer settings and S13 application,
with the configured lists loaded) and hands out connections to it as asyncio streams, so
that the raw MME of ``tests/mme.py`` talks to it as it does over TCP. Each connection is a
``PeerConnection`` of the node's settings (one registry for all, as on a node) fed by an
in-memory transport: what the MME writes goes to ``receive_data``, what the peer sends
comes back on the MME's reader, and ``should_close`` ends the stream. The peer's timer
runs on the event loop's clock, as the TCP adapter arms it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from s13eir.config import Config
from s13eir.diameter.events import PeerOpened
from s13eir.diameter.peer import PeerConnection
from s13eir.lists.configured import load_snapshot
from s13eir.node import Node


class _PeerTransport(asyncio.Transport):
    def __init__(self, eir: VirtualEir, reader: asyncio.StreamReader) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._closed = False  # by the MME
        self._peer_closed = False  # by the node: the MME reads what was sent, then EOF
        self._protocol: asyncio.BaseProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.conn = PeerConnection(eir.settings, self._loop.time(), eir.rng, "127.0.0.1", owner=self)
        self._arm()

    # -- what the MME does ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._peer_closed:
            return  # as on a socket the node closed: the bytes go nowhere
        self.conn.receive_data(bytes(data), self._loop.time())
        self._flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.conn.connection_lost()
            self._cancel_timer()
            if self._protocol is not None:  # after what was fed: the reader sees the data, then EOF
                self._loop.call_soon(self._protocol.connection_lost, None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 3868), "sockname": ("127.0.0.1", 40000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def abort(self) -> None:
        self.close()

    # -- what the peer does -----------------------------------------------------------------

    def _flush(self) -> None:
        assert not self.conn.take_deferred(), "an embedded node defers no answer"
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, PeerOpened) and isinstance(event.displaced, _PeerTransport):
                event.displaced.conn.close_displaced()
                event.displaced._flush()
        out = self.conn.data_to_send()
        if out:
            self._loop.call_soon(self._reader.feed_data, out)
        if self.conn.should_close:
            self._peer_closed = True
            self._cancel_timer()
            self._loop.call_soon(self._reader.feed_eof)
        else:
            self._arm()

    def _arm(self) -> None:
        self._cancel_timer()
        when = self.conn.get_timer()
        if when is not None and not self._closed and not self._peer_closed:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._closed and not self._peer_closed:
            self.conn.handle_timer(self._loop.time())
            self._flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class VirtualEir:
    host = "in-memory"
    port = 0

    def __init__(self, config: Config) -> None:
        self.node = Node(config)
        self.node.app.lists = load_snapshot(config)
        self.settings = self.node.settings
        self.rng = random.Random(1)

    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport = _PeerTransport(self, reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
