"""Server CPU per hostile message: a CER from an unknown Origin-Host carrying Failed-AVP
nested ``--depth`` deep, and an ECR with Proxy-Info nested as deep, against a normal
CER + ECR exchange measured in the same run (the ratio is what to compare).

Starts ``s13eir serve`` (the example lists, a free loopback port), sends ``--n`` of
each over fresh connections (a hostile CER is answered and closed), and reads the
node's CPU time from /proc/<pid>/stat before and after each batch.

    .venv/bin/python bench/hostile.py [--depth 600] [--n 200] [--src DIR/src]

``--src`` runs the node from another checkout (an older commit in a git worktree).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import mme as M  # noqa: E402

from harness import free_port, wait_ready, write_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def nested(code: int, depth: int, leaf: bytes, every: bytes = b"") -> bytes:
    out = leaf
    for _ in range(depth):
        out = M.grouped(code, every + out)
    return out


async def exchange(port: int, messages: list[bytes], expect_close: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for msg in messages:
            writer.write(msg)
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(20), 10)
            length = int.from_bytes(head[1:4], "big")
            await asyncio.wait_for(reader.readexactly(length - 20), 10)
        if expect_close:
            await asyncio.wait_for(reader.read(), 10)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # closed without an answer: what the code before the depth limit did
    finally:
        writer.close()


async def batch(pid: int, port: int, n: int, make: object, expect_close: bool) -> float:
    c0 = cpu_s(pid)
    for i in range(n):
        await exchange(port, make(i), expect_close)  # type: ignore[operator]
    await asyncio.sleep(0.2)
    return (cpu_s(pid) - c0) / n


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    port, http = free_port(), free_port()
    config = write_config(tmp, port, http)
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    node = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(http, node)
        leaf = M.avp(M.AVP_PROXY_HOST, b"dra.bench.test") + M.avp(M.AVP_PROXY_STATE, b"s")

        def normal(i: int) -> list[bytes]:
            return [
                M.to_bytes(M.cer(f"mme{i}.bench.test")),
                M.to_bytes(M.ecr(M.IMEI_UNLISTED, origin_host=f"mme{i}.bench.test")),
            ]

        def hostile_cer(i: int) -> list[bytes]:
            deep = nested(M.AVP_FAILED_AVP, args.depth, M.u32(M.AVP_RESULT_CODE, 2001))
            return [M.with_avps(M.to_bytes(M.cer(f"stranger{i}.bench.test")), deep)]

        def hostile_ecr(i: int) -> list[bytes]:
            ecr = M.with_avps(M.to_bytes(M.ecr(M.IMEI_UNLISTED, origin_host=f"mme{i}.bench.test")),
                              nested(M.AVP_PROXY_INFO, args.depth, leaf))  # fmt: skip
            return [M.to_bytes(M.cer(f"mme{i}.bench.test")), ecr]

        base = await batch(node.pid, port, args.n, normal, False)
        cer = await batch(node.pid, port, args.n, hostile_cer, True)
        ecr = await batch(node.pid, port, args.n, hostile_ecr, False)
        size = len(hostile_cer(0)[0])
        print(f"src: {args.src or 'this checkout'}; depth {args.depth} ({size} bytes); {args.n} of each")
        print(f"  normal CER+ECR on a new connection: {base * 1e3:.2f} ms of server CPU")
        print(f"  hostile CER (unknown host):         {cer * 1e3:.2f} ms  ({cer / base:.1f}x)")
        print(f"  CER + hostile ECR:                  {ecr * 1e3:.2f} ms  ({ecr / base:.1f}x)")
        print(f"  node still running: {node.poll() is None}")
    finally:
        node.terminate()
        node.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=600)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--src", default="")
    args = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="s13eir-hostile-") as d:
        asyncio.run(main_async(args, Path(d)))
    print(f"  ({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
