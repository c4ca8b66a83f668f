"""What every benchmark here shares: free loopback ports, CPU pinning, starting an
s13eir node (or the framed echo server) and waiting for it, a node configuration, and
running ``s13eir load``. Imports nothing from the benchmarks, so that none of them
imports another."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LISTS = ROOT / "config" / "lists"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def ready(http: int) -> bool:
    """True when the node's /readyz on ``http`` says 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_ready(http: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"s13eir exited with {proc.returncode}")
        if ready(http):
            return
        time.sleep(0.2)
    raise SystemExit("s13eir did not become ready")


def loop_lag_buckets(http: int) -> dict[str, float]:
    """The node's s13eir_event_loop_lag_seconds buckets (cumulative, by "le")."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    prefix = 's13eir_event_loop_lag_seconds_bucket{le="'
    return {
        line[len(prefix) :].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def lag_during(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Probe ticks during a run, and those late by more than 1 ms and 5 ms."""
    ticks = after["+Inf"] - before["+Inf"]
    return {
        "ticks": ticks,
        "over_1ms": ticks - (after["0.001"] - before["0.001"]),
        "over_5ms": ticks - (after["0.005"] - before["0.005"]),
    }


def write_config(tmp: Path, port: int, http: int, **store: Any) -> Path:
    cfg: dict[str, Any] = {
        "node": {"origin_host": "eir.bench.test", "origin_realm": "bench.test"},
        "listen": [{"transport": "tcp", "address": "127.0.0.1", "port": port}],
        "peers": {"allow_unknown": True},
        "store": store
        or {
            "lists": [
                {"path": str(LISTS / "blacklist.csv"), "format": "dirbs-blacklist"},
                {"path": str(LISTS / "greylist.csv"), "format": "csv"},
                {"path": str(LISTS / "exceptions.csv"), "format": "dirbs-exceptions"},
                {"path": str(LISTS / "rules.yaml"), "format": "rules-yaml"},
            ]
        },
        # Verdict log lines would be measured instead of the lookup: keep them out.
        "logging": {"level": "warning"},
        # The event-loop lag probe every 5 ms: how often s13eir's loop is held during a run.
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": http, "loop_lag_interval_ms": 5},
    }
    path = tmp / f"eir-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def load(tmp: Path, port: int, args: argparse.Namespace, *extra: str, cpu: int | None = 1) -> dict[str, Any]:
    out = tmp / f"load-{time.monotonic_ns()}.json"
    target = [] if "--sbi" in extra else ["--peer", f"127.0.0.1:{port}"]
    cmd = [*pin(cpu), PY, "-m", "s13eir.cli", "load", *target, "--mmes", str(args.mmes),
           "--duration", str(args.duration), "--warmup", "1", "--no-live", "--json", str(out), *extra]  # fmt: skip
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=args.duration * 4 + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


class Server:
    def __init__(self, cmd: list[str], port: int, http: int | None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if http is None:
            wait_tcp(port, self.proc)
        else:
            wait_ready(http, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """bench/echo_server.py pinned to CPU 0; yields its port."""
    port = free_port()
    echo = Server([*pin(0), PY, str(ROOT / "bench" / "echo_server.py"), "--port", str(port)], port, None)
    try:
        yield port
    finally:
        echo.stop()


def s13eir(config: Path, http: int, workers: int = 1) -> Server:
    port = yaml.safe_load(config.read_text())["listen"][0]["port"]
    cmd = [PY, "-m", "s13eir.cli", "serve", "--config", str(config)]
    if workers > 1:
        return Server([*cmd, "--workers", str(workers)], port, http)
    return Server([*pin(0), *cmd], port, http)


def p(result: dict[str, Any], key: str) -> float:
    return float(result["latency_us"][key])
