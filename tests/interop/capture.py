"""Capture the sessions of independent Diameter peers with s13eir, for the fixtures.

Runs ``s13eir serve`` (the test configuration), a recording TCP relay in front of it, and
the peer through the relay; writes every frame of both directions, in order, to
``tests/fixtures/<peer>_session.json``:

* ``otp``: the Erlang/OTP ``diameter`` MME of ``test_otp_diameter.py``;
* ``freediameter``: freeDiameterd as a relay agent (DRA) between the python-diameter MME
  of ``test_freediameter.py`` and s13eir (what is recorded is freeDiameter's leg);
* ``tshark``: the raw session of ``test_tshark.py`` (protocol-error requests, a DWR, a
  DPR), whose capture Wireshark's dissector reads there.

``tests/diameter/test_interop_fixtures.py`` replays the peer's requests against the
sans-IO peer, so that their encoding (AVP order, flags, padding, a relay's Route-Record)
stays covered where Erlang or freeDiameter is not installed. Run it again when a peer or
its cases change:

    .venv/bin/python -m tests.interop.capture otp|freediameter|tshark
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from tests.conftest import free_port, start_eir_process, stop_eir_process
from tests.interop.test_freediameter import DRA_PEERS, RELAY_CASES, relay_session
from tests.interop.test_otp_diameter import SESSION_CASES, _otp_diameter_available, run_otp_mme
from tests.interop.test_tshark import raw_session

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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


def _recorded(eir_port: int, drive: Callable[[int], None]) -> tuple[list[str], list[str]]:
    """Run ``drive(port)`` against a recording relay to ``eir_port``; the peer's frames
    and s13eir's, each in order."""
    record: list[tuple[str, bytes]] = []
    ready = threading.Event()
    port = free_port()
    relay = threading.Thread(target=_relay, args=(port, eir_port, record, ready), daemon=True)
    relay.start()
    ready.wait(10)
    drive(port)
    relay.join(10)
    return (
        _frames(b"".join(d for tag, d in record if tag == "mme")),
        _frames(b"".join(d for tag, d in record if tag == "eir")),
    )


def capture_otp() -> dict[str, object]:
    reason = _otp_diameter_available()
    if reason is not None:
        raise SystemExit(reason)
    peers = {"watchdog_interval_s": 6}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        eir = start_eir_process(tmp_path, peers=peers)
        runs = []
        try:
            mme, eir_frames = _recorded(
                eir.port, lambda port: runs.append(run_otp_mme(tmp_path, port, SESSION_CASES, watchdog_wait_s=15))
            )
        finally:
            stop_eir_process(eir)
    if runs[0].returncode != 0 or "DONE" not in runs[0].stdout.splitlines():
        raise SystemExit(f"the OTP MME failed:\n{runs[0].stdout}")
    return {
        "peer": "Erlang/OTP diameter (tests/interop/otp/otp_mme.escript), through a recording relay",
        "peers": peers,
        "cases": [list(c) for c in SESSION_CASES],
        "mme": mme,
        "eir": eir_frames,
    }


def capture_freediameter() -> dict[str, object]:
    exe = shutil.which("freeDiameterd")
    if exe is None:
        raise SystemExit("freeDiameterd is not installed (apt: freediameterd freediameter-extensions)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        eir = start_eir_process(tmp_path, peers=DRA_PEERS)
        try:
            peer, eir_frames = _recorded(eir.port, lambda port: relay_session(exe, tmp_path, port))
        finally:
            stop_eir_process(eir)
    return {
        "peer": "freeDiameterd 1.2 as a relay agent (dra.s13eir.test), its leg to s13eir through a recording relay",
        "peers": DRA_PEERS,
        "cases": [[label, imei, imsi, host] for label, imei, imsi, host, _ in RELAY_CASES] + [["p_bit"]],
        "mme": peer,
        "eir": eir_frames,
    }


def capture_tshark() -> dict[str, object]:
    """test_tshark.py's raw session (python-diameter's CER, the protocol-error ECRs, a DWR
    and a DPR), the one whose capture tshark dissects."""
    config = {"policy": {"unknown_imei": "unknown"}}
    with tempfile.TemporaryDirectory() as tmp:
        eir = start_eir_process(Path(tmp), **config)
        cases: list[str] = []
        try:
            peer, eir_frames = _recorded(eir.port, lambda port: cases.extend(raw_session(port)[0]))
        finally:
            stop_eir_process(eir)
    return {
        "peer": "python-diameter, test_tshark.py's raw session (protocol errors), through a recording relay",
        "config": config,
        "raw": True,  # its requests are not all ECRs of the cases: compared by bytes only
        "cases": [[c] for c in cases],
        "mme": peer,
        "eir": eir_frames,
    }


CAPTURES = {"otp": capture_otp, "freediameter": capture_freediameter, "tshark": capture_tshark}


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "otp"
    if name not in CAPTURES:
        raise SystemExit(f"usage: python -m tests.interop.capture {'|'.join(CAPTURES)}")
    data = CAPTURES[name]()
    out = FIXTURES / f"{name}_session.json"
    FIXTURES.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{out}: {len(data['mme'])} frames from the peer, {len(data['eir'])} from s13eir", file=sys.stderr)  # type: ignore[arg-type]
