"""Shared fixtures: free loopback ports, an EIR node in-process or as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings

from s13eir.config import Config
from s13eir.config_loading import config_from_mapping
from s13eir.node import Node
from tests.services import MosquittoBroker, RedisServer, require

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LISTS = ROOT / "config" / "lists"

settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

MME_HOST = "mme.s13eir.test"
MME_REALM = "s13eir.test"
EIR_HOST = "eir.s13eir.test"
EIR_REALM = "s13eir.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (``serve --workers`` gives worker
    i the metrics port + i). Taken below Linux's ephemeral range (32768-60999), where no
    ``free_port()`` or outgoing connection of a test running in parallel can land."""
    rng = random.Random(os.urandom(8))
    for _ in range(500):
        base = rng.randrange(20000, 32768 - n)
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"no {n} consecutive free ports in 20000-32767")


def node_config(**overrides: Any) -> dict[str, Any]:
    """A test configuration mapping: sample lists, MME_HOST as the only peer, port 0."""
    cfg: dict[str, Any] = {
        "node": {"origin_host": EIR_HOST, "origin_realm": EIR_REALM},
        "listen": [{"transport": "tcp", "address": "127.0.0.1", "port": 0}],
        "peers": {
            "allow_unknown": False,
            "list": [
                {"origin_host": MME_HOST, "origin_realm": MME_REALM},
                {"origin_host": "mme2.s13eir.test", "origin_realm": MME_REALM},
            ],
        },
        "store": {
            "lists": [
                {"path": str(SAMPLE_LISTS / "blacklist.csv"), "format": "dirbs-blacklist"},
                {"path": str(SAMPLE_LISTS / "greylist.csv"), "format": "csv"},
                {"path": str(SAMPLE_LISTS / "exceptions.csv"), "format": "dirbs-exceptions"},
                {"path": str(SAMPLE_LISTS / "rules.yaml"), "format": "rules-yaml"},
            ]
        },
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": 0},
        "logging": {"level": "warning"},
        # Nodes of the tests share the test process (and its event loop or GIL) with the
        # test code, which holds the loop at times: admission control would answer 3004
        # for the test's own stalls. tests/test_overload*.py turn it on.
        "diameter": {"overload": {"enabled": False}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class RunningNode:
    node: Node
    host: str
    port: int
    http_port: int


@contextlib.asynccontextmanager
async def running_node(config: Config) -> AsyncIterator[RunningNode]:
    node = Node(config)
    await node.start()
    tcp = next((p for t, _, p in node.bound if t == "tcp"), 0)
    http = next((p for t, _, p in node.bound if t == "http"), 0)
    try:
        yield RunningNode(node, "127.0.0.1", tcp, http)
    finally:
        await node.stop()
        await asyncio.sleep(0)


async def verdict(rn: RunningNode, imei: str, imsi: str | None = None) -> str:
    """One ECR on a fresh connection (CER, ECR, DPR): the verdict as `s13eir check` prints it."""
    from s13eir.client import S13Client

    c = S13Client(MME_HOST, MME_REALM)
    await c.connect(rn.host, rn.port)
    try:
        return (await c.check(imei, imsi)).verdict
    finally:
        await c.disconnect()


@pytest.fixture
async def eir() -> AsyncIterator[RunningNode]:
    """An EIR node in this test's event loop, on a free port, with the sample lists."""
    async with running_node(config_from_mapping(node_config())) as rn:
        yield rn


@dataclass
class EirProcess:
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    config_path: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_eir_process(tmp_path: Path, **overrides: Any) -> EirProcess:
    """``s13eir serve`` as a real process (the CLI end to end), ready when /readyz says so."""
    port, http_port = free_port(), free_port()
    cfg = node_config(**overrides)
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http_port}
    cfg.setdefault("logging", {})["level"] = "info"
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log_path = tmp_path / "eir.log"
    exe = shutil.which("s13eir") or sys.executable
    args = [exe] if exe.endswith("s13eir") else [exe, "-m", "s13eir.cli"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*args, "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"s13eir exited with {proc.returncode}: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return EirProcess(proc, port, http_port, path, log_path)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"s13eir did not become ready: {log_path.read_text()}")


def stop_eir_process(p: EirProcess) -> None:
    if p.proc.poll() is None:
        p.proc.terminate()
        try:
            p.proc.wait(10)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(5)


@pytest.fixture
def eir_process(tmp_path: Path) -> Iterator[EirProcess]:
    p = start_eir_process(tmp_path)
    try:
        yield p
    finally:
        stop_eir_process(p)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (no persistence)."""
    require("redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private mosquitto broker on a free loopback port, with persistence for restarts."""
    require("mosquitto")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
