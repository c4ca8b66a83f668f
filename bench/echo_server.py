"""The ceiling: a minimal framed Diameter server that answers every request with a
fixed answer (CEA to CER, DWA, DPA, and the same whitelisted ECA to every ECR),
echoing only the hop-by-hop and end-to-end identifiers. Answers of one read are
written in one batch, as s13eir does. It does no validation and no lookup, so it
measures what the event loop, the sockets and the load generator allow.

    python bench/echo_server.py --port 3869 [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct

from diameter.message.avp.grouped import VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    DeviceWatchdogAnswer,
    DisconnectPeerAnswer,
    MeIdentityCheckAnswer,
)


def _templates() -> dict[int, bytes]:
    cea = CapabilitiesExchangeAnswer()
    cea.result_code, cea.origin_host, cea.origin_realm = 2001, b"echo.bench", b"bench"
    cea.host_ip_address, cea.vendor_id, cea.product_name = ["127.0.0.1"], 0, "echo"
    cea.vendor_specific_application_id = [VendorSpecificApplicationId(vendor_id=10415, auth_application_id=16777252)]
    dwa = DeviceWatchdogAnswer()
    dwa.result_code, dwa.origin_host, dwa.origin_realm = 2001, b"echo.bench", b"bench"
    dpa = DisconnectPeerAnswer()
    dpa.result_code, dpa.origin_host, dpa.origin_realm = 2001, b"echo.bench", b"bench"
    eca = MeIdentityCheckAnswer()
    eca.header.application_id = 16777252
    eca.session_id = "mme.bench;0000000000;0000000000"
    eca.result_code, eca.auth_session_state = 2001, 1
    eca.origin_host, eca.origin_realm, eca.equipment_status = b"echo.bench", b"bench", 0
    return {257: cea.as_bytes(), 280: dwa.as_bytes(), 282: dpa.as_bytes(), 324: eca.as_bytes()}


TEMPLATES = _templates()
_CODE = struct.Struct("!I")


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 20:
            length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if length < 20 or n - pos < length:
                break
            if buf[pos + 4] & 0x80:
                code = _CODE.unpack_from(buf, pos + 4)[0] & 0xFFFFFF
                answer = TEMPLATES.get(code)
                if answer is not None:
                    out.append(answer[:12] + bytes(buf[pos + 12 : pos + 20]) + answer[20:])
            pos += length
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.run(serve(args.port))
            return
        except ImportError:
            pass
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
