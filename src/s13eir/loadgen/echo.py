"""A trivial EIR stand-in that answers every ECR WHITELISTED at once, to measure what
the generator itself can do on a machine (``s13eir load --echo``): whatever rate it
reaches against this is the ceiling above which its numbers say nothing about an EIR.

It does the least an S13 peer must: CEA 2001 to any CER, DWA/DPA, and for an ECR an
ECA built from the request's ids and Session-Id plus a constant tail. It checks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import struct
from multiprocessing.connection import Connection
from typing import cast

from s13eir.diameter import avp as enc
from s13eir.diameter.constants import (
    APP_S13,
    AUTH_SESSION_NO_STATE_MAINTAINED,
    AVP_AUTH_SESSION_STATE,
    AVP_EQUIPMENT_STATUS,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_PRODUCT_NAME,
    AVP_RESULT_CODE,
    AVP_VENDOR_ID,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DISCONNECT_PEER,
    CMD_ME_IDENTITY_CHECK,
    FLAG_PROXIABLE,
    SUCCESS,
    VENDOR_3GPP,
)

__all__ = ["EchoEir", "echo_process", "serve_echo"]

ECHO_HOST = "echo.s13eir.test"
ECHO_REALM = "s13eir.test"
_II = struct.Struct("!II")
_ORIGIN = enc.utf8(AVP_ORIGIN_HOST, ECHO_HOST) + enc.utf8(AVP_ORIGIN_REALM, ECHO_REALM)
_SUCCESS = enc.u32(AVP_RESULT_CODE, SUCCESS)
_ECA_TAIL = (
    _SUCCESS
    + enc.u32(AVP_AUTH_SESSION_STATE, AUTH_SESSION_NO_STATE_MAINTAINED)
    + _ORIGIN
    + enc.u32(AVP_EQUIPMENT_STATUS, 0, vendor=VENDOR_3GPP)
)
_ECA_FLAGS_CODE = (FLAG_PROXIABLE << 24) | CMD_ME_IDENTITY_CHECK


class EchoEir(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        buf = self._buf
        out: list[bytes] = []
        pos = 0
        close = False
        while len(buf) - pos >= 20:
            w0, w1 = _II.unpack_from(buf, pos)
            length = w0 & 0xFFFFFF
            if length < 20 or len(buf) - pos < length:
                break
            command = w1 & 0xFFFFFF
            ids = bytes(buf[pos + 12 : pos + 20])
            if command == CMD_ME_IDENTITY_CHECK:
                sid_len = (int.from_bytes(buf[pos + 25 : pos + 28], "big") + 3) & ~3  # Session-Id comes first
                body = bytes(buf[pos + 20 : pos + 20 + sid_len]) + _ECA_TAIL
                out += (_II.pack(0x01000000 | (20 + len(body)), _ECA_FLAGS_CODE), APP_S13.to_bytes(4, "big"), ids, body)
            elif w1 >> 24 & 0x80:  # CER, DWR, DPR: 2001 with our identity
                body = _SUCCESS + _ORIGIN
                if command == CMD_CAPABILITIES_EXCHANGE:
                    body += enc.u32(AVP_VENDOR_ID, 0) + enc.utf8(AVP_PRODUCT_NAME, "s13eir-echo", mandatory=False)
                out += (_II.pack(0x01000000 | (20 + len(body)), command), bytes(4), ids, body)
                close = command == CMD_DISCONNECT_PEER
            pos += length
        del buf[:pos]
        if self.transport is not None and out:
            self.transport.write(b"".join(out))
            if close:
                self.transport.close()


async def serve_echo(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(EchoEir, host, port)


def echo_process(conn: Connection) -> None:
    """Entry point of the ``--echo`` process: serve until told to stop (or the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .procs import new_event_loop

    loop = new_event_loop()

    async def main() -> None:
        server = await serve_echo()
        conn.send(server.sockets[0].getsockname()[1])
        done = asyncio.Event()
        loop.add_reader(conn.fileno(), done.set)  # any message, or EOF, means stop
        await done.wait()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
