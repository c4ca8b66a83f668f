"""An asyncio Protocol that shuttles bytes between a socket and a PeerConnection.

Answers produced by one read are written with one ``transport.write`` (batched),
and one timer handle per connection is re-armed only when the core's deadline
moves. When the peer stops reading, we stop reading too (flow control), so a
client cannot make us buffer answers without bound.
"""

from __future__ import annotations

import asyncio
import fcntl
import random
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import cast

from ..diameter.constants import UNABLE_TO_COMPLY
from ..diameter.events import Event, PeerOpened, ProtocolError
from ..diameter.peer import PeerConnection, PeerSettings, PeerState
from ..observability.logs import get_logger

_log = get_logger("s13eir.transport")

EventSink = Callable[[Event, "DiameterProtocol"], None]


class DiameterProtocol(asyncio.Protocol):
    def __init__(
        self,
        settings: PeerSettings,
        on_event: EventSink,
        connections: set[DiameterProtocol],
        observe: Callable[[float, int], None] | None = None,
        resolve: Callable[[object, Callable[[bytes], None]], None] | None = None,
        max_pending: int = 0,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        # Answers requests that need I/O (remote list lookups) through the given callback.
        self._resolve = resolve
        self._flush_scheduled = False
        self._observe = observe  # time from a read to its answers being written
        self._on_event = on_event
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.core: PeerConnection | None = None
        self.remote: str = ""
        self.closed = asyncio.Event()
        # Connections that have not completed CER, all of them together: past this, a new
        # one is closed at once (nobody authenticated can make the node hold more).
        self._max_pending = max_pending
        self._on_refused = on_refused
        self.bytes_read = 0  # since admission control last took it (``take_read``)

    # asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        ip = peername[0] if isinstance(peername, tuple) else None
        self.remote = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if self._max_pending and sum(c.state is PeerState.WAIT_CER for c in self._connections) >= self._max_pending:
            if self._on_refused is not None:
                self._on_refused()
            transport.abort()
            self.closed.set()
            return
        self.core = PeerConnection(self._settings, self._loop.time(), random.Random(), ip, owner=self)
        self._connections.add(self)
        self._after()

    def data_received(self, data: bytes) -> None:
        core = self.core
        assert core is not None
        t0 = time.perf_counter()
        before = core.answered
        self.bytes_read += len(data)
        try:
            core.receive_data(data, self._loop.time())
        except Exception as exc:
            # A bug, not the peer's error (those are answered by the core): one JSON line
            # with the traceback, a count, and this connection closed; the others go on.
            _log.error("connection_failed", remote=self.remote, exc_info=exc)
            self._on_event(ProtocolError(UNABLE_TO_COMPLY, 0, f"internal error: {type(exc).__name__}"), self)
            if self._transport is not None:
                self._transport.abort()
            return
        self._after()
        n = core.answered - before
        if self._observe is not None and n:
            self._observe(time.perf_counter() - t0, n)  # once per answer of this read

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.core is not None:
            self.core.connection_lost()
            self._drain_events()
        self._connections.discard(self)
        self.closed.set()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # owner API ------------------------------------------------------------------

    def stop(self, cause: int) -> None:
        """Begin a graceful disconnect (DPR); the core closes on DPA or its timeout."""
        if self.core is not None:
            self.core.stop(self._loop.time(), cause)
            self._after()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def input_backlog(self) -> tuple[int, bool]:
        """Bytes the kernel holds for this connection that the node has not read yet (the
        queue in front of it, which no timer inside the process can see), and whether
        they fill half its receive buffer or more. Then the peer's sending is held back by
        the TCP window: more waits on its side, where the node cannot count it."""
        t = self._transport
        sock = t.get_extra_info("socket") if t is not None and not t.is_closing() else None
        if sock is None:
            return 0, False
        try:
            n = int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
            return n, n > 0 and 2 * n >= sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except (OSError, ValueError):
            return 0, False

    def take_read(self) -> int:
        """Bytes read since the last call: with ``input_backlog``, how long what waits will
        take to read at the rate the node reads."""
        n, self.bytes_read = self.bytes_read, 0
        return n

    def write_buffer_size(self) -> int:
        t = self._transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    @property
    def state(self) -> PeerState:
        return self.core.state if self.core is not None else PeerState.WAIT_CER

    # internals ----------------------------------------------------------------

    def _after(self) -> None:
        core = self.core
        transport = self._transport
        if core is None or transport is None:
            return
        if self._resolve is not None:
            for token in core.take_deferred():
                self._resolve(token, self._deliver)
        out = core.data_to_send()
        if out and not transport.is_closing():
            transport.write(out)
        if core.events_pending:
            self._drain_events()
        if core.should_close:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not transport.is_closing():
                transport.close()  # flushes what was written first
            return
        at = core.get_timer()
        if at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at

    def _deliver(self, answer: bytes) -> None:
        if self.core is None:
            return
        self.core.deliver(answer)
        # Lookups of one batch complete together: write their answers with one write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._after()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.core is not None:
            self.core.handle_timer(self._loop.time())
            self._after()

    def _drain_events(self) -> None:
        core = self.core
        assert core is not None
        while (event := core.next_event()) is not None:
            if isinstance(event, PeerOpened) and isinstance(event.displaced, DiameterProtocol):
                event.displaced.close_displaced()
            self._on_event(event, self)

    def close_displaced(self) -> None:
        if self.core is not None:
            self.core.close_displaced()
            self._after()
