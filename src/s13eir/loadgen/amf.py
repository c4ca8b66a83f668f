"""One simulated AMF (``--sbi``): an HTTP/2 connection (h2c, prior knowledge) to the EIR's
N5g-eir API, as an asyncio Protocol with the same driving interface as
:class:`~s13eir.loadgen.connection.MmeConnection` (``send``/``flush``, ``top_up``,
``expire``, ``disconnect``), so that :class:`~s13eir.loadgen.client.ProcessRun` runs both.

Each workload combination becomes one pre-built request path
``{prefix}/n5g-eir-eic/v1/equipment-status?pei=imei-<15 digits>[&supi=imsi-<imsi>]``;
answers map onto the S13 outcomes they stand for: 200 ``{"status": ...}`` -> the
Equipment-Status, 404 ERROR_EQUIPMENT_UNKNOWN -> 5422, 400 -> 5004 (a malformed PEI
under ``policy.malformed_imei: reject``). HTTP status codes are counted in
``Stats.http_codes`` (``http-200`` ... in the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from s13eir.decision.imei import luhn_check_digit

from .driver import PeerDriver, Traffic
from .imeis import Combo
from .stats import Stats
from .wire import BLACKLISTED, EQUIPMENT_UNKNOWN, GREYLISTED, WHITELISTED, outcome_name

__all__ = ["RESOURCE", "AmfConnection", "SbiUrlError", "parse_sbi_url", "pei_path"]

RESOURCE = "/n5g-eir-eic/v1/equipment-status"
MALFORMED_REJECTED = 5004  # what S13 answers a malformed IMEI under malformed_imei: reject; SBI says 400
_STATUSES = {b"WHITELISTED": WHITELISTED, b"BLACKLISTED": BLACKLISTED, b"GREYLISTED": GREYLISTED}
_SEND_BUFFER_LIMIT = 32 << 20
_H2_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,  # bytes in, bytes out
    validate_outbound_headers=False,  # ours are fixed and correct
    validate_inbound_headers=False,  # only :status is read; malformed answers show as mismatches
    normalize_inbound_headers=False,
)


class SbiUrlError(ValueError):
    """A --sbi URL that cannot be used."""


def parse_sbi_url(url: str) -> tuple[str, int, str]:
    """``http://host:port[/prefix]`` -> (host, port, path prefix without trailing slash)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SbiUrlError(f"--sbi: {exc}") from None
    if parts.scheme != "http":
        raise SbiUrlError(f"--sbi: expected http://HOST:PORT (h2c; TLS is not supported), got {url!r}")
    if not parts.hostname:
        raise SbiUrlError(f"--sbi: no host in {url!r}")
    if parts.query or parts.fragment:
        raise SbiUrlError(f"--sbi: no query or fragment expected in {url!r}")
    return parts.hostname, port if port is not None else 80, parts.path.rstrip("/")


def pei_path(combo: Combo, prefix: str = "") -> bytes:
    """The request path that asks what ``combo`` asks over S13."""
    imei = combo.imei
    if imei.isascii() and imei.isdigit() and len(imei) == 14:
        pei = f"imei-{imei}{luhn_check_digit(imei)}"
    elif imei.isascii() and imei.isdigit() and len(imei) == 16:
        pei = f"imeisv-{imei}"  # S13 reads a 16-digit IMEI as an IMEISV too
    else:
        pei = "imei-" + quote(imei, safe="")  # 15 digits as they are; malformed ones as sent
    query = f"pei={pei}"
    if combo.imsi:
        query += "&supi=imsi-" + quote(combo.imsi, safe="")
    return f"{prefix}{RESOURCE}?{query}".encode()


class AmfConnection(PeerDriver):
    """Drive with ``send``/``flush`` (open loop) or ``concurrency`` (closed loop)."""

    def __init__(
        self,
        name: str,
        authority: str,
        traffic: Traffic,
        stats: Stats,
        deck_offset: int,
        concurrency: int = 0,
        budget: int = -1,
    ) -> None:
        super().__init__(name, traffic, stats, deck_offset, concurrency, budget)  # pending: by stream id
        self._headers_base = (b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority.encode())
        self._paths: Sequence[bytes] = traffic.bodies
        self._answers: dict[int, tuple[int, bytearray]] = {}  # stream id -> (HTTP status, body so far)
        self.h2 = h2.connection.H2Connection(config=_H2_CONFIG)
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self._attach(transport)
        self.h2.initiate_connection()
        tr.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(self.ready, "closed before the server's SETTINGS", exc)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fatal("http2_protocol_error", str(exc))
            return
        now = time.monotonic_ns()
        answers = self._answers
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                status = 0
                for name, value in ev.headers or ():
                    if name == b":status":
                        status = int(value)
                answers[ev.stream_id] = (status, bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                got = answers.get(ev.stream_id)
                if got is not None and ev.data:
                    got[1].extend(ev.data)
                if ev.flow_controlled_length:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                status, body = answers.pop(ev.stream_id, (0, bytearray()))
                entry = self.pending.pop(ev.stream_id, None)
                if entry is None:
                    self.stats.late_answers += 1
                else:
                    self._answer(status, bytes(body), now, entry)
            elif isinstance(ev, h2.events.StreamReset):
                answers.pop(ev.stream_id, None)
                entry = self.pending.pop(ev.stream_id, None)
                if entry is not None and entry[2]:
                    self.stats.error("stream_reset", detail=f"{self.origin_host}: RST_STREAM {ev.error_code!r}")
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                if not self._leaving:
                    self.stats.error("goaway", detail=f"{self.origin_host}: GOAWAY {ev.error_code!r}")
                self._leaving = True
                self.sending = False
        if self.sending:
            self.top_up(now)
        self.flush()

    # -- answers ----------------------------------------------------------------------------

    def _answer(self, status: int, body: bytes, now: int, entry: tuple[int, int, bool]) -> None:
        if not self._count_answer(now, entry):
            return
        combo = entry[1]
        stats = self.stats
        stats.http_codes[status] = stats.http_codes.get(status, 0) + 1
        got: int | None = None
        got_name = f"http-{status}"
        if status == 200:
            try:
                doc = json.loads(body)
                got = _STATUSES.get(str(doc.get("status")).encode()) if isinstance(doc, dict) else None
            except ValueError:
                got = None
            if got is None:
                stats.error("unparsable_answer", detail=f"{self.origin_host}: 200 {body[:80]!r}")
                return
            stats.equipment_status[got] = stats.equipment_status.get(got, 0) + 1
        elif status == 404:
            if b"ERROR_EQUIPMENT_UNKNOWN" in body:
                got = EQUIPMENT_UNKNOWN
            else:
                got_name = f"http-404 {body[:80]!r}"
        elif status == 400:
            got = MALFORMED_REJECTED
        if got is not None:
            if got == self._expected[combo]:
                return
            got_name = outcome_name(got)
        self._mismatch(combo, got_name)

    # -- sending ----------------------------------------------------------------------------

    def send(self, intended_ns: int, measured: bool) -> bool:
        """Start one request (written by ``flush``); False when it was dropped."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._leaving or not self.ready.done():
            return False
        conn = self.h2
        full = (
            transport.get_write_buffer_size() > _SEND_BUFFER_LIMIT
            or conn.open_outbound_streams >= conn.remote_settings.max_concurrent_streams
        )
        if not self._count_request(measured, full):
            return False
        combo = self._next_combo()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [*self._headers_base, (b":path", self._paths[combo])], end_stream=True)
        self.pending[stream_id] = (intended_ns, combo, measured)
        return True

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def disconnect(self, timeout: float) -> bool:
        """GOAWAY and close (HTTP/2 has no answer to wait for: always True)."""
        transport = self.transport
        self._leaving = True
        self.sending = False
        if transport is None or transport.is_closing():
            return True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
        self.flush()
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), min(timeout, 1.0))
        return True
