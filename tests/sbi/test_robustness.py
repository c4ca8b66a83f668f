"""Bad input on the N5g-eir port: each gets a clear error, and the server keeps serving."""

from __future__ import annotations

import asyncio
import struct

import h2.errors
import h2.settings
import httpx

from tests.sbi_helpers import (
    PEI_BLACK,
    PEI_UNLISTED,
    RESOURCE,
    RawH2,
    check_raw,
    check_response,
    h2_client,
    running_sbi,
)

GOAWAY = 0x7
SETTINGS = 0x4


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each HTTP/2 frame in ``data``."""
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[9 : 9 + length]))
        data = data[9 + length :]
    return out


async def still_serving(url: str) -> None:
    async with h2_client(url) as client:
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK})
        assert r.json() == {"status": "BLACKLISTED"}


async def read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return await reader.read(-1)


async def test_garbage_instead_of_the_preface_gets_goaway_protocol_error() -> None:
    async with running_sbi() as sbi:
        for garbage in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
            b"\x00" * 24,
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(*sbi.server.bound)
            writer.write(garbage)
            data = await read_all(reader)  # the server closes after answering
            kinds = frames(data)
            assert kinds[0][0] == SETTINGS
            goaway = next(payload for kind, payload in kinds if kind == GOAWAY)
            _, code = struct.unpack("!II", goaway[:8])
            assert code == h2.errors.ErrorCodes.PROTOCOL_ERROR
            assert b"preface" in goaway[8:]
            writer.close()
        await still_serving(sbi.url)
        assert sbi.server.metrics.connection_errors == {"preface": 3}


async def test_an_http1_request_gets_a_readable_505() -> None:
    async with running_sbi() as sbi:
        reader, writer = await asyncio.open_connection(*sbi.server.bound)
        writer.write(f"GET {RESOURCE}?pei={PEI_BLACK} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = await read_all(reader)
        assert data.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
        assert b"HTTP/2 only" in data
        writer.close()
        async with httpx.AsyncClient() as http1:  # an HTTP/1.1-only client sees the same
            r = await http1.get(sbi.url + RESOURCE, params={"pei": PEI_BLACK})
            assert r.status_code == 505 and r.headers["content-type"] == "application/problem+json"
        await still_serving(sbi.url)


async def test_oversized_headers_431_then_goaway_above_the_hard_limit() -> None:
    async with running_sbi(max_header_list_size=8192) as sbi:
        raw = await RawH2.connect(*sbi.server.bound)
        big = raw.request(f"{RESOURCE}?pei={PEI_BLACK}", [(b"x-big", b"a" * 20_000)])
        await raw.flush()
        await raw.pump(lambda: raw.responses[big]["done"])
        assert raw.responses[big]["status"] == 431
        check_raw(raw.responses[big])
        ok = raw.request(f"{RESOURCE}?pei={PEI_BLACK}")  # same connection: still usable
        await raw.flush()
        await raw.pump(lambda: raw.responses[ok]["done"])
        assert raw.responses[ok]["status"] == 200
        check_raw(raw.responses[ok])
        # Above what we advertise (64 KiB): an HPACK bomb, the connection is dropped.
        raw.request(f"{RESOURCE}?pei={PEI_BLACK}", [(b"x-huge", b"b" * 70_000)])
        await raw.flush()
        await raw.pump(lambda: raw.terminated is not None)
        assert raw.terminated is not None
        assert raw.terminated.error_code in (
            h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
            h2.errors.ErrorCodes.PROTOCOL_ERROR,
        )
        await raw.close()
        await still_serving(sbi.url)
        assert sbi.server.metrics.connection_errors == {"protocol": 1}


async def test_2000_requests_over_4_connections_within_the_stream_limit() -> None:
    async with running_sbi(max_concurrent_streams=16) as sbi:
        raw = await RawH2.connect(*sbi.server.bound)
        await raw.pump(lambda: raw.conn.remote_settings.max_concurrent_streams == 16)  # advertised
        await raw.close()

        async def one_connection(n: int) -> list[int]:
            async with h2_client(sbi.url) as client:
                got = await asyncio.gather(*(client.get(RESOURCE, params={"pei": PEI_UNLISTED}) for _ in range(n)))
                return [r.status_code for r in got]

        results = await asyncio.gather(*(one_connection(500) for _ in range(4)))
        assert [len(r) for r in results] == [500] * 4
        assert all(code == 200 for r in results for code in r)
        assert sbi.server.metrics.connections_total == 5  # the raw probe + 4
        assert sbi.server.metrics.connection_errors == {}
        await still_serving(sbi.url)


async def test_a_tiny_flow_control_window_still_gets_whole_answers() -> None:
    async with running_sbi() as sbi:
        raw = await RawH2.connect(*sbi.server.bound)
        raw.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 5})
        await raw.flush()
        await raw.pump(lambda: raw.conn.remote_settings.max_concurrent_streams == 128)
        await asyncio.sleep(0.05)
        sids = [raw.request(f"{RESOURCE}?pei={PEI_BLACK}") for _ in range(3)]
        await raw.flush()
        await raw.pump(lambda: all(raw.responses[s]["done"] for s in sids))
        for s in sids:
            assert raw.responses[s]["status"] == 200
            assert raw.responses[s]["body"] == b'{"status":"BLACKLISTED"}'
            check_raw(raw.responses[s])
        await raw.close()


async def test_idle_connections_are_closed_with_goaway() -> None:
    async with running_sbi(idle_timeout_s=0.2) as sbi:
        raw = await RawH2.connect(*sbi.server.bound)
        await raw.pump(lambda: raw.terminated is not None, timeout=3)
        assert raw.terminated is not None and raw.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        await raw.close()
        assert sbi.server.metrics.connection_errors == {"idle": 1}


async def test_close_sends_goaway_to_open_connections() -> None:
    async with running_sbi() as sbi:
        raw = await RawH2.connect(*sbi.server.bound)
        sid = raw.request(f"{RESOURCE}?pei={PEI_BLACK}")
        await raw.flush()
        await raw.pump(lambda: raw.responses[sid]["done"])
        closing = asyncio.create_task(sbi.server.close())
        await raw.pump(lambda: raw.terminated is not None)
        assert raw.terminated is not None and raw.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        await raw.close()  # the server waits for this (bounded) before it aborts
        await closing
        assert sbi.server.connections == 0


async def test_answers_validate_even_for_odd_requests() -> None:
    """Requests httpx would not normally send (odd methods, odd Accept): still documented answers."""
    async with running_sbi() as sbi, h2_client(sbi.url) as client:
        for method in ("HEAD", "OPTIONS", "PUT", "PATCH"):
            r = await client.request(method, RESOURCE, params={"pei": PEI_BLACK})
            assert r.status_code == 405
            if method != "HEAD":
                check_response(r)
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK}, headers={"accept": ""})
        assert r.status_code == 200
