"""A minimal HTTP/1.1 server for /metrics, /healthz and /readyz on asyncio streams.

* ``/healthz`` is liveness: 200 ``ok`` whenever the server can answer at all. It
  runs on the node's own event loop, so an answer shows that the process is alive
  and its loop turns; a loop held by long work answers late or not at all, which
  the probe's timeout sees. It checks nothing else (lists, Redis, peers), does no
  I/O and takes no lock: a node that is loading its lists or has lost Redis must
  not be restarted for it. The node opens this server before it loads its lists.
* ``/readyz`` is readiness: 200 or 503 as the ``ready`` callable says, with its
  reason as the body (the node's: ``loading: ...``, ``not listening yet``, Redis
  away, ``shutting down``).
* ``/metrics`` is the Prometheus text exposition of a :class:`Metrics`.

One request per connection, then close: a scraper or probe opens a connection per
request anyway, and it keeps the server free of keep-alive state. The request head is
capped and must arrive within a deadline, so slow or oversized clients cannot pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from s13eir.observability.metrics import Metrics, SourceMetrics, render

__all__ = ["HEAD_TIMEOUT_S", "MAX_HEAD_BYTES", "start_http"]

MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

Ready = Callable[[], tuple[bool, str]]
Answer = tuple[int, str, bytes]
# Further paths: an answer, None (not ours), or an awaitable of either (a route that asks a store).
Routes = Callable[[bytes], Answer | Awaitable[Answer | None] | None]


async def start_http(
    address: str, port: int, metrics: Metrics | SourceMetrics, ready: Ready, routes: Routes | None = None
) -> asyncio.Server:
    """Listen on ``address:port`` (port 0 picks a free one: see ``server.sockets``).

    ``ready()`` returns (ready, reason); the reason is the body of a 503 from /readyz.
    ``routes(path)`` answers further paths (status, content type, body), or None.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve_one(reader, writer, metrics, ready, routes)
        except (TimeoutError, ConnectionError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)

    # The stream limit makes readuntil() give up once the head outgrows MAX_HEAD_BYTES.
    return await asyncio.start_server(handle, address, port, limit=MAX_HEAD_BYTES)


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    metrics: Metrics | SourceMetrics,
    ready: Ready,
    routes: Routes | None = None,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
    except asyncio.LimitOverrunError:
        await _respond(writer, 431, TEXT, b"request head too large\n", head_only=False)
        return
    except TimeoutError:
        await _respond(writer, 408, TEXT, b"request head not received in time\n", head_only=False)
        return
    except asyncio.IncompleteReadError:
        return  # closed before a full head: nobody to answer

    request_line = head.split(b"\r\n", 1)[0]
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        await _respond(writer, 400, TEXT, b"bad request line\n", head_only=False)
        return
    method = parts[0]
    path = parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        await _respond(writer, 405, TEXT, b"method not allowed\n", head_only=False, extra=(("Allow", "GET, HEAD"),))
        return
    found = routes(path) if routes is not None else None
    if found is not None and not isinstance(found, tuple):
        found = await found
    status, ctype, body = found if found is not None else _route(path, metrics, ready)
    await _respond(writer, status, ctype, body, head_only=method == b"HEAD")


def _route(path: bytes, metrics: Metrics | SourceMetrics, ready: Ready) -> tuple[int, str, bytes]:
    if path == b"/metrics":
        try:
            return 200, METRICS_CONTENT_TYPE, render(metrics)
        except Exception as exc:  # a broken collector must not kill the endpoint
            return 500, TEXT, f"cannot render metrics: {exc}\n".encode()
    if path == b"/healthz":
        return 200, TEXT, b"ok\n"  # liveness: answering is the check (module docstring)
    if path == b"/readyz":
        try:
            is_ready, reason = ready()
        except Exception as exc:
            is_ready, reason = False, f"readiness check failed: {exc}"
        if is_ready:
            return 200, TEXT, f"{reason or 'ready'}\n".encode()
        return 503, TEXT, f"{reason or 'not ready'}\n".encode()
    return 404, TEXT, b"not found\n"


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in extra),
    ]
    # HEAD gets the GET headers, Content-Length included, without the body (RFC 9110 §9.3.2).
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))
    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
