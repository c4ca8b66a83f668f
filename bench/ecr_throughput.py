"""ECR answers per second from one s13eir process on one core, with a simple pipelined client.

Starts ``s13eir serve`` pinned to CPU 0 (when taskset exists), connects one or more
clients pinned to CPU 1, keeps WINDOW requests outstanding per connection, and
prints answers per second for each IMEI mix. Loopback only; bounded in count and time.

    .venv/bin/python bench/ecr_throughput.py [--requests 200000] [--conns 4] [--window 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import CapabilitiesExchangeRequest, MeIdentityCheckRequest

ROOT = Path(__file__).resolve().parent.parent
MIXES = {
    "whitelisted (on no list)": ["35450712345675"],
    "blacklisted (on a list)": ["35209900176148"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, http = free_port(), free_port()
    cfg = yaml.safe_load((ROOT / "config" / "eir.yaml").read_text())
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http}
    cfg["peers"]["allow_unknown"] = True
    cfg["logging"] = {"level": "warning"}
    for entry in cfg["store"]["lists"]:
        entry["path"] = str(ROOT / "config" / entry["path"])
    path = tmp / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1 else []
    proc = subprocess.Popen([*pin, sys.executable, "-m", "s13eir.cli", "serve", "--config", str(path)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def cer(n: int) -> bytes:
    m = CapabilitiesExchangeRequest()
    m.origin_host = f"mme{n}.bench.test".encode()
    m.origin_realm = b"bench.test"
    m.host_ip_address = ["127.0.0.1"]
    m.vendor_id = 0
    m.product_name = "bench"
    m.origin_state_id = n
    m.vendor_specific_application_id = [VendorSpecificApplicationId(vendor_id=10415, auth_application_id=16777252)]
    return bytes(m.as_bytes())


def ecr(n: int, imei: str) -> bytes:
    m = MeIdentityCheckRequest()
    m.header.application_id = 16777252
    m.session_id = f"mme{n}.bench.test;1;1"
    m.auth_session_state = 1
    m.origin_host = f"mme{n}.bench.test".encode()
    m.origin_realm = b"bench.test"
    m.destination_realm = b"epc.mnc001.mcc001.3gppnetwork.org"
    m.terminal_information = TerminalInformation(imei=imei, software_version="01")
    m.user_name = "001010123456789"
    return bytes(m.as_bytes())


class Client(asyncio.Protocol):
    def __init__(self, template: bytes, total: int, window: int, done: asyncio.Future[None]) -> None:
        self.template = bytearray(template)
        self.total, self.window, self.done = total, window, done
        self.sent = self.answered = 0
        self.buf = bytearray()
        self.opened = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, k: int) -> None:
        assert self.transport is not None
        out = []
        for _ in range(k):
            struct.pack_into("!I", self.template, 12, self.sent & 0xFFFFFFFF)
            out.append(bytes(self.template))
            self.sent += 1
        self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n, pos = 0, 0
        while len(self.buf) - pos >= 20:
            length = int.from_bytes(self.buf[pos + 1 : pos + 4], "big")
            if len(self.buf) - pos < length:
                break
            pos += length
            n += 1
        del self.buf[:pos]
        if not self.opened:
            self.opened = True
            self.send(min(self.window, self.total))
            return
        self.answered += n
        more = min(n, self.total - self.sent)
        if more > 0:
            self.send(more)
        if self.answered >= self.total and not self.done.done():
            self.done.set_result(None)


async def run(port: int, imei: str, total: int, conns: int, window: int) -> float:
    loop = asyncio.get_running_loop()
    clients = []
    per = total // conns
    for i in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        tr, c = await loop.create_connection(
            lambda d=done, n=i: Client(ecr(n, imei), per, window, d), "127.0.0.1", port
        )
        tr.write(cer(i))
        clients.append((tr, c, done))
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(d for _, _, d in clients)), timeout=120)
    elapsed = time.perf_counter() - t0
    for tr, _, _ in clients:
        tr.close()
    return per * conns / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    args = ap.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp))
        try:
            asyncio.run(run(port, "35450712345675", min(20_000, args.requests), args.conns, args.window))  # warm-up
            print(f"{'mix':28} {'answers/s':>10}")
            for name, imeis in MIXES.items():
                rate = asyncio.run(run(port, imeis[0], args.requests, args.conns, args.window))
                print(f"{name:28} {rate:10.0f}")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
