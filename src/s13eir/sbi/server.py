"""The N5g-eir HTTP/2 server: h2 (the sans-IO HTTP/2 engine) under an asyncio.Protocol.

One ``_H2Protocol`` per connection feeds bytes to ``h2.connection.H2Connection``, turns
each complete request into a :class:`~s13eir.sbi.n5g_eir.Request`, asks the pure
:class:`~s13eir.sbi.n5g_eir.N5gEir` for the answer, and writes everything one read
produced in one ``transport.write`` (the batching that makes the S13 side fast).
The verdict is synchronous (an in-memory snapshot), so a stream is answered in the same
``data_received`` call that completed it; nothing is left running per request.

Transport: cleartext h2c with prior knowledge, or TLS with ALPN ``h2`` (TS 29.500 §5.2:
HTTP/2 only). HTTP/1.x is not served: a client that sends an HTTP/1 request line gets
one plain ``505`` answer that says to use HTTP/2, then the connection closes; any other
bytes that are not the HTTP/2 preface get GOAWAY(PROTOCOL_ERROR).

Limits: SETTINGS_MAX_CONCURRENT_STREAMS (``max_concurrent_streams``); header lists above
``max_header_list_size`` get 431 on their stream, and above 64 KiB (what we advertise,
and h2's hard limit) the connection ends with GOAWAY; write back-pressure pauses reading;
an idle connection is closed with GOAWAY(NO_ERROR) after ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from structlog.typing import FilteringBoundLogger

from s13eir.config import PolicyConfig, SbiConfig
from s13eir.observability.logs import get_logger
from s13eir.observability.metrics import Metrics
from s13eir.overload import OverloadControl
from s13eir.sbi.metrics import SbiMetrics
from s13eir.sbi.n5g_eir import (
    Answer,
    Check,
    DeferredAnswer,
    Limits,
    N5gEir,
    Request,
    SbiOutcome,
    overloaded,
)
from s13eir.sbi.nrf import NrfClient, nf_instance_id
from s13eir.sbi.oauth2 import TokenVerifier, load_verifier
from s13eir.supervision import Supervisor

__all__ = ["OnOutcome", "SbiServer", "start_sbi"]

OnOutcome = Callable[[SbiOutcome], None]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP1 = re.compile(rb"[A-Z]{3,10} [^ ]+ HTTP/1\.[01]\r?\n")  # an HTTP/1.x request line
_LINGER_S = 2.0  # how long a closing connection waits for the client to close its side
_HARD_HEADER_LIST = 65536  # advertised SETTINGS_MAX_HEADER_LIST_SIZE; h2 drops the connection above it
_STATUS = {code: str(code).encode() for code in range(100, 600)}
_HTTP1_BODY = (
    b'{"title":"HTTP Version Not Supported","status":505,'
    b'"detail":"N5g-eir is served over HTTP/2 only (h2c with prior knowledge, or TLS with ALPN h2)"}'
)
_HTTP1_ANSWER = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: application/problem+json\r\n"
    b"content-length: " + str(len(_HTTP1_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _HTTP1_BODY
)
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,  # bytes in, bytes out: no per-header str conversion
    validate_outbound_headers=False,  # ours are fixed and correct; validation costs per request
    normalize_outbound_headers=False,
)


@dataclass(slots=True)
class _Shared:
    """What every connection of one server uses."""

    service: N5gEir
    on_outcome: OnOutcome
    metrics: SbiMetrics
    log: FilteringBoundLogger
    max_streams: int
    idle_timeout: float
    clock: Callable[[], float]
    connections: set[_H2Protocol]
    overload: OverloadControl | None = None  # the node's admission control, shared with S13


class _H2Protocol(asyncio.Protocol):
    def __init__(self, shared: _Shared) -> None:
        self.s = shared
        self.conn = h2.connection.H2Connection(config=_H2_CONFIG)
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: shared.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _HARD_HEADER_LIST,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.preface: bytes | None = b""  # bytes of the client preface seen so far; None once complete
        self.pending: dict[int, Request] = {}  # requests whose END_STREAM has not arrived
        self.blocked: dict[int, bytes] = {}  # response bodies waiting for flow-control window
        self.last_active = 0.0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.closing = False  # GOAWAY sent or connection failed: input is discarded

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.s.connections.add(self)
        self.s.metrics.connections_total += 1
        self.s.metrics.connections_open += 1
        tls = self.transport.get_extra_info("ssl_object")
        if isinstance(tls, ssl.SSLObject) and tls.selected_alpn_protocol() not in (None, "h2"):
            self._fail("tls", "ALPN did not select h2")  # we offer only h2, so this is a broken client
            return
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()
        self.idle_handle = loop.call_later(self.s.idle_timeout, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.connections.discard(self)
        self.s.metrics.connections_open -= 1
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        self.pending.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.closing:
            return
        self.last_active = asyncio.get_running_loop().time()
        if self.preface is not None:
            data = self._check_preface(data)
            if not data:
                return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the right error code (PROTOCOL_ERROR, ENHANCE_YOUR_CALM...).
            self._fail("protocol", f"{type(exc).__name__}: {exc}")
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    # -- HTTP/2 ---------------------------------------------------------------------

    def _check_preface(self, data: bytes) -> bytes:
        """Data to hand to h2 once the client preface is complete; b"" while waiting or after
        rejecting it. The server preface (SETTINGS) is sent only then, so that an HTTP/1
        client gets a readable HTTP/1 answer instead of binary frames."""
        assert self.preface is not None
        buf = self.preface + data
        n = min(len(buf), len(_PREFACE))
        if buf[:n] != _PREFACE[:n]:
            self.preface = None
            if _HTTP1.match(buf):
                assert self.transport is not None
                self.transport.write(_HTTP1_ANSWER)
                self._fail("http1", "an HTTP/1.x request on the HTTP/2-only N5g-eir port")
            else:
                self.conn.initiate_connection()
                self.conn.close_connection(ErrorCodes.PROTOCOL_ERROR, b"invalid HTTP/2 connection preface")
                self._fail("preface", "invalid HTTP/2 connection preface")
            return b""
        if n < len(_PREFACE):
            self.preface = buf
            return b""
        self.preface = None
        self.conn.initiate_connection()
        return buf

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            req = self._request(cast(list[tuple[bytes, bytes]], event.headers or []))
            if event.stream_ended is not None:
                self._answer(event.stream_id, req)
            else:
                self.pending[event.stream_id] = req
        elif isinstance(event, h2.events.DataReceived):
            # Keep the window open: the content is discarded, but the client must not stall.
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            pending = self.pending.pop(event.stream_id, None) if event.data else None
            if pending is not None:
                # Answer now (GET takes no content) and ask the client to stop sending
                # (RFC 9113 §8.1: a complete answer, then RST_STREAM(NO_ERROR)).
                self._answer(event.stream_id, _with_body(pending, len(event.data)))
                self._reset(event.stream_id, ErrorCodes.NO_ERROR)
        elif isinstance(event, h2.events.StreamEnded):
            pending = self.pending.pop(event.stream_id, None)
            if pending is not None:
                self._answer(event.stream_id, pending)
        elif isinstance(event, h2.events.StreamReset):
            self.pending.pop(event.stream_id, None)
            self.blocked.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._send_blocked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._flush()
            self._close_after_goaway()

    def _request(self, headers: list[tuple[bytes, bytes]]) -> Request:
        """The fields N5g-eir looks at (header_encoding=None: names and values are bytes)."""
        method = path = ""
        accept: list[str] = []
        content_type = authorization = user_agent = None
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
            if name == b":method":
                method = value.decode("latin-1")
            elif name == b":path":
                path = value.decode("latin-1")
            elif name == b"accept":
                accept.append(value.decode("latin-1"))
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value[:128].decode("latin-1")
        return Request(method, path, ",".join(accept) if accept else None, content_type, authorization, 0, size,
                       self.client, user_agent)  # fmt: skip

    def _answer(self, stream_id: int, req: Request) -> None:
        ov = self.s.overload
        if ov is not None and ov.reduction and ov.refuse():
            ov.refused += 1
            self._complete(stream_id, req, overloaded(self.client))
            return
        try:
            answer = self.s.service.handle(req, self.s.clock())
        except Exception as exc:  # a bug must cost one answer, not the connection or the server
            self.s.log.error("sbi_handler_failed", error=repr(exc), path=req.path, client=self.client)
            answer = _internal_error(req, exc)
        if isinstance(answer, DeferredAnswer):
            fut = asyncio.ensure_future(answer.pending)
            fut.add_done_callback(lambda f: self._deferred_done(stream_id, req, answer, f))
            return
        self._complete(stream_id, req, answer)

    def _deferred_done(self, stream_id: int, req: Request, deferred: DeferredAnswer, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        answer = (
            deferred.finish(None, f"check failed: {exc!r}") if exc is not None else deferred.finish(fut.result(), "")
        )
        self._complete(stream_id, req, answer)
        self._flush()

    def _complete(self, stream_id: int, req: Request, answer: Answer) -> None:
        self._send(stream_id, answer, head=req.method == "HEAD")
        self.s.metrics.count_answer(answer.outcome)
        try:
            self.s.on_outcome(answer.outcome)
        except Exception as exc:
            self.s.log.error("sbi_on_outcome_failed", error=repr(exc))

    def _send(self, stream_id: int, answer: Answer, head: bool = False) -> None:
        body = answer.body
        headers = [(b":status", _STATUS[answer.status]), *answer.headers, (b"content-length", str(len(body)).encode())]
        if head:
            body = b""  # RFC 9110 §9.3.2: the same header fields as GET would get, no content
        try:
            self.conn.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.StreamClosedError:
            return  # the client reset the stream meanwhile
        if body:
            self.blocked[stream_id] = body
            self._send_blocked(stream_id)

    def _send_blocked(self, only: int | None = None) -> None:
        """Send response bodies as far as the flow-control windows allow."""
        for stream_id in [only] if only is not None else list(self.blocked):
            body = self.blocked.get(stream_id)
            if body is None:
                continue
            try:
                window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                while body and window > 0:
                    chunk, body = body[:window], body[window:]
                    self.conn.send_data(stream_id, chunk, end_stream=not body)
                    window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
                body = b""
            if body:
                self.blocked[stream_id] = body
            else:
                del self.blocked[stream_id]

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        if stream_id in self.blocked:
            return  # the answer is still waiting for window: resetting would discard it
        # Already closed is fine: the client ended its side too.
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            self.conn.reset_stream(stream_id, code)

    # -- connection end ---------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _fail(self, kind: str, detail: str) -> None:
        self.s.metrics.count_connection_error(kind)
        self.s.log.info("sbi_connection_error", kind=kind, detail=detail, client=self.client)
        self._flush()
        self._close_after_goaway()

    def goaway(self) -> None:
        """Tell the client no new streams will be served, then close (graceful stop)."""
        if self.transport is None or self.closing:
            return
        if self.preface is None:
            self.conn.close_connection(ErrorCodes.NO_ERROR)
            self._flush()
        self._close_after_goaway()

    def _close_after_goaway(self) -> None:
        """Half-close and keep reading (discarding) until the client closes, at most _LINGER_S.

        Closing at once would make the kernel answer the client's next frames (a SETTINGS
        ACK, a WINDOW_UPDATE) with a TCP RST, and an RST makes the client drop unread
        data: the GOAWAY or the last answer would be lost.
        """
        transport = self.transport
        if transport is None or self.closing:
            return
        self.closing = True
        if transport.is_closing():
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the client is already gone
                transport.abort()
                return
        else:
            transport.close()  # TLS cannot half-close; its close_notify plays the same part
        asyncio.get_running_loop().call_later(_LINGER_S, transport.abort)

    def _idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_active
        if idle >= self.s.idle_timeout:
            self.s.metrics.count_connection_error("idle")
            self.goaway()
        else:
            self.idle_handle = loop.call_later(self.s.idle_timeout - idle, self._idle_check)


def _with_body(req: Request, length: int) -> Request:
    return Request(req.method, req.path, req.accept, req.content_type, req.authorization, length,
                   req.header_list_size, req.client, req.user_agent)  # fmt: skip


def _internal_error(req: Request, exc: Exception) -> Answer:
    body = b'{"title":"Internal Server Error","status":500,"cause":"SYSTEM_FAILURE"}'
    outcome = SbiOutcome(500, "SYSTEM_FAILURE", None, client=req.client, detail=repr(exc))
    return Answer(500, ((b"content-type", b"application/problem+json"),), body, outcome)


def server_tls_context(cfg: SbiConfig) -> ssl.SSLContext:
    """TLS 1.2+ with ALPN h2 only (TS 33.501 §13.1); client certificates required with ``cafile``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert cfg.certfile and cfg.keyfile
    ctx.load_cert_chain(cfg.certfile, cfg.keyfile)
    ctx.set_alpn_protocols(["h2"])
    if cfg.cafile:
        ctx.load_verify_locations(cfg.cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class SbiServer:
    """A running N5g-eir server (and its NRF registration, if configured)."""

    def __init__(self, server: asyncio.Server, shared: _Shared, nrf: NrfClient | None, instance_id: str) -> None:
        self._server = server
        self._shared = shared
        self.nrf = nrf
        self.nf_instance_id = instance_id
        self.metrics = shared.metrics
        sock = server.sockets[0].getsockname()
        self.bound: tuple[str, int] = (str(sock[0]), int(sock[1]))

    def set_policy(self, policy: PolicyConfig) -> None:
        """The node's ``policy`` section after a reload (requests that follow use it)."""
        self._shared.service.policy = policy.decision_policy()

    @property
    def connections(self) -> int:
        return len(self._shared.connections)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, deregister from the NRF (bounded), GOAWAY every connection."""
        self._server.close()
        if self.nrf is not None:
            await self.nrf.close()
        for conn in list(self._shared.connections):
            conn.goaway()
        deadline = time.monotonic() + timeout
        while self._shared.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._shared.connections):
            if conn.transport is not None:
                conn.transport.abort()


async def start_sbi(
    cfg: SbiConfig,
    check: Check,
    on_outcome: OnOutcome,
    metrics: Metrics,
    *,
    policy: PolicyConfig | None = None,
    node_name: str | None = None,
    reuse_port: bool = False,
    log: FilteringBoundLogger | None = None,
    clock: Callable[[], float] = time.time,
    supervisor: Supervisor | None = None,
    overload: OverloadControl | None = None,
) -> SbiServer:
    """Bind the N5g-eir server and start the NRF client (if ``cfg.nrf.url``); returns once
    listening. ``check(imei14, imsi)`` gives the verdict (None: no verdict, answered 500);
    ``policy`` is the node's ``policy`` section (defaults otherwise); ``node_name`` (the
    Diameter Origin-Host) keeps a derived nfInstanceId stable across restarts."""
    log = log or get_logger("s13eir.sbi")
    instance_id = nf_instance_id(cfg, node_name)
    verifier: TokenVerifier | None = None
    if cfg.oauth2.enabled:
        o = cfg.oauth2
        verifier = load_verifier(algorithms=o.algorithms, secret=o.secret, key_file=o.key_file, audience=o.audience,
                                 issuer=o.issuer, leeway_s=o.leeway_s, nf_instance_id=instance_id)  # fmt: skip
    limits = Limits(cfg.max_header_list_size, cfg.max_uri_length)
    service = N5gEir(check, (policy or PolicyConfig()).decision_policy(), limits, verifier)
    sbi_metrics = SbiMetrics()
    sbi_metrics.attach(metrics)
    shared = _Shared(service, on_outcome, sbi_metrics, log, cfg.max_concurrent_streams, cfg.idle_timeout_s, clock,
                     set(), overload)  # fmt: skip
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _H2Protocol(shared),
        cfg.address,
        cfg.port,
        ssl=server_tls_context(cfg) if cfg.tls else None,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    nrf: NrfClient | None = None
    if cfg.nrf.url:
        sock = server.sockets[0].getsockname()
        nrf = NrfClient(cfg, instance_id, int(sock[1]), sbi_metrics, log)
        nrf.start(supervisor)
    sbi = SbiServer(server, shared, nrf, instance_id)
    log.info("sbi_listening", address=sbi.bound[0], port=sbi.bound[1], tls=cfg.tls, nf_instance_id=instance_id,
             oauth2=verifier is not None, nrf=cfg.nrf.url)  # fmt: skip
    return sbi
