"""Capture an Erlang/OTP ``diameter`` MME's session with s13eir, for the fixtures.

Runs ``s13eir serve`` (the test configuration), a recording TCP relay in front of it, and
the OTP MME of ``test_otp_diameter.py`` through the relay; writes every frame of both
directions, in order, to ``tests/fixtures/otp_session.json``. ``tests/test_interop_fixtures.py``
replays the MME's requests against the sans-IO peer, so that OTP's encoding (its AVP
order, flags and padding) stays covered where Erlang is not installed. Run it again when
the OTP MME or the cases change:

    .venv/bin/python -m tests.interop.capture
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
from pathlib import Path

from ..conftest import free_port, start_eir_process, stop_eir_process
from .test_otp_diameter import SESSION_CASES, _otp_diameter_available, run_otp_mme

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "otp_session.json"


def _frames(data: bytes) -> list[str]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(data[pos : pos + n].hex())
        pos += n
    return out


def _relay(listen_port: int, eir_port: int, record: list[tuple[str, bytes]], ready: threading.Event) -> None:
    async def main() -> None:
        done = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", eir_port)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tag: str) -> None:
                while data := await src.read(65536):
                    record.append((tag, data))
                    dst.write(data)
                    await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_w, "mme"), pipe(up_r, writer, "eir"), return_exceptions=True)
            done.set()

        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        ready.set()
        async with server:
            await asyncio.wait_for(done.wait(), 120)

    asyncio.run(main())


def capture() -> dict[str, object]:
    reason = _otp_diameter_available()
    if reason is not None:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        eir = start_eir_process(tmp_path, peers={"watchdog_interval_s": 6})
        record: list[tuple[str, bytes]] = []
        ready = threading.Event()
        port = free_port()
        relay = threading.Thread(target=_relay, args=(port, eir.port, record, ready), daemon=True)
        relay.start()
        ready.wait(10)
        try:
            run = run_otp_mme(tmp_path, port, SESSION_CASES, watchdog_wait_s=15)
        finally:
            stop_eir_process(eir)
        relay.join(10)
    if run.returncode != 0 or "DONE" not in run.stdout.splitlines():
        raise SystemExit(f"the OTP MME failed:\n{run.stdout}")
    mme = b"".join(d for tag, d in record if tag == "mme")
    eir_bytes = b"".join(d for tag, d in record if tag == "eir")
    return {
        "peer": "Erlang/OTP diameter (tests/interop/otp/otp_mme.escript), through a recording relay",
        "cases": [list(c) for c in SESSION_CASES],
        "mme": _frames(mme),
        "eir": _frames(eir_bytes),
    }


if __name__ == "__main__":
    data = capture()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{OUT}: {len(data['mme'])} frames from the MME, {len(data['eir'])} from s13eir", file=sys.stderr)  # type: ignore[arg-type]
