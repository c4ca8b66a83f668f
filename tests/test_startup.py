"""Start-up with a large list: the health server is up before the lists are loaded.

While a node loads its lists, ``/healthz`` is 200, ``/readyz`` is 503 ``loading: ...``,
``/metrics`` answers, and the Diameter port is not open yet (peers are refused
until there is something to answer with). The process tests watch a real
``s13eir serve`` from its first instant and check the order of the states they
see, never how long a state lasted: the list is big enough (two million IMEIs,
seconds of parsing) that the loading state cannot slip between two polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from s13eir.client import check_once
from s13eir.config_loading import config_from_mapping
from s13eir.decision.model import ListKind
from s13eir.lists.formats import ListFormatError, ListSpec, load_lists
from s13eir.lists.loading import LOAD_SWITCH_INTERVAL_S, in_thread
from s13eir.lists.progress import LoadProgress
from s13eir.lists.snapshot import SnapshotBuilder
from s13eir.node import Node, StartError
from tests.conftest import free_port, free_port_block, node_config

BIG_IMEIS = 600_000  # parsed in about 3 s here: long enough to poll /readyz through it
FIRST_IMEI = 35209900000000  # on the big list; so is every 7th IMEI after it
UNLISTED = "35450712345675"
DEADLINE_S = 120  # only against a hang: nothing here asserts a duration
PARSING = ("loading: reading list 1 of 1", "loading: indexing")  # what /readyz says while the file is parsed


def write_big_list(path: Path, n: int, *, bad_last_row: bool = False) -> None:
    """A dirbs-blacklist file of ``n`` IMEIs (about 17 bytes a row), written in chunks."""
    with open(path, "w") as f:
        f.write("imei,block_date,reasons\n")
        step = 200_000
        for start in range(0, n, step):
            f.write("".join([f"{FIRST_IMEI + 7 * i:014d},,\n" for i in range(start, min(n, start + step))]))
        if bad_last_row:
            f.write("not-an-imei,,\n")


@pytest.fixture(scope="module")
def big_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "blacklist.csv"
    write_big_list(path, BIG_IMEIS)
    return path


# -- watching a process ---------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int | None, str]:
    """(status, body); status None when nothing listens (or answers) on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except OSError:
        return None, ""


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Seen:
    """One poll: /healthz, /readyz (status and body), then whether the Diameter port accepted."""

    at: float
    healthz: int | None
    readyz: int | None
    body: str
    diameter: bool

    @property
    def loading(self) -> bool:
        return self.readyz == 503 and self.body.startswith("loading")


def write_config(tmp_path: Path, list_path: Path, port: int, http: int) -> Path:
    cfg = node_config(store={"lists": [{"path": str(list_path), "format": "dirbs-blacklist"}]})
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http}
    cfg["logging"] = {"level": "info"}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def serve(config: Path, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s13eir.cli", "serve", "--config", str(config), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def watch_until_ready(proc: subprocess.Popen[bytes], http: int, port: int, log: Path) -> tuple[list[Seen], str]:
    """Poll from the process's start until /readyz is 200; also one /metrics while loading."""
    t0 = time.monotonic()
    seen: list[Seen] = []
    metrics_while_loading = ""
    while True:
        assert proc.poll() is None, f"s13eir exited with {proc.returncode}: {log.read_text(errors='replace')}"
        assert time.monotonic() - t0 < DEADLINE_S, f"not ready: {seen[-3:]}"
        healthz, _ = http_get(http, "/healthz")
        readyz, body = http_get(http, "/readyz")
        s = Seen(time.monotonic() - t0, healthz, readyz, body.strip(), accepts(port))
        seen.append(s)
        if s.loading and not metrics_while_loading:
            status, metrics_while_loading = http_get(http, "/metrics")
            assert status == 200
        if readyz == 200:
            return seen, metrics_while_loading
        time.sleep(0.05)


def check_order(seen: list[Seen], *, workers: bool = False) -> list[Seen]:
    """The states come in order: nothing; loading (health 200, Diameter closed); ready.

    With ``workers``, the loading that must come before any Diameter port is the
    supervisor's parse (a worker mapping the parsed file may still say loading while
    another worker already serves), and a worker may open the shared Diameter port
    before worker 0 opens its health port.
    """
    loading = [s for s in seen if s.loading]
    assert loading, f"no poll saw the lists loading: {seen}"
    assert all(s.healthz == 200 for s in loading)
    assert any(not s.diameter for s in loading)  # refused while loading
    first_open = next(i for i, s in enumerate(seen) if s.diameter)
    parsing = [s for s in loading if s.body.startswith(PARSING)] if workers else loading
    # Once the Diameter port accepted, the lists were loaded: no later poll says loading.
    assert not any(s in parsing for s in seen[first_open + 1 :])
    if not workers:
        # Before the health server is up, the Diameter port is not open either.
        assert not any(s.diameter for s in seen if s.healthz is None)
    return loading


def lists_loaded(log: str) -> dict[str, Any]:
    for line in log.splitlines():
        if '"lists_loaded"' in line:
            record: dict[str, Any] = json.loads(line)
            return record
    raise AssertionError(f"no lists_loaded line: {log}")


def test_health_answers_while_a_big_list_loads(big_list: Path, tmp_path: Path) -> None:
    port, http = free_port(), free_port()
    log = tmp_path / "eir.log"
    with serve(write_config(tmp_path, big_list, port, http), log) as proc:
        seen, metrics = watch_until_ready(proc, http, port, log)
        loading = check_order(seen)
        assert all(s.body.startswith(PARSING) for s in loading)
        assert "s13eir_event_loop_lag_seconds_count" in metrics
        assert "process_resident_memory_bytes" in metrics
        assert accepts(port)
        assert asyncio.run(check_once("127.0.0.1", port, f"{FIRST_IMEI + 7 * 1000:014d}")).verdict == "BLACKLISTED"
        assert asyncio.run(check_once("127.0.0.1", port, UNLISTED)).verdict == "WHITELISTED"
        record = lists_loaded(log.read_text())
        assert record["black"] == BIG_IMEIS
        print(
            f"\n{BIG_IMEIS} IMEIs: loaded in {record['seconds']} s; loading seen from "
            f"{loading[0].at:.2f} s to {loading[-1].at:.2f} s after exec ({len(loading)} polls), "
            f"ready at {seen[-1].at:.2f} s"
        )
    assert proc.returncode == 0


def test_workers_supervisor_answers_on_worker_0_port_while_it_loads(big_list: Path, tmp_path: Path) -> None:
    port, http = free_port(), free_port_block(2)  # metrics: http for worker 0, http + 1 for worker 1
    log = tmp_path / "eir.log"
    with serve(write_config(tmp_path, big_list, port, http), log, "--workers", "2") as proc:
        seen, metrics = watch_until_ready(proc, http, port, log)
        loading = check_order(seen, workers=True)
        # The supervisor parses; worker 0 only maps the result, which may also show briefly.
        assert any(s.body.startswith(PARSING) for s in loading)
        assert "process_resident_memory_bytes" in metrics
        deadline = time.monotonic() + DEADLINE_S
        while http_get(http + 1, "/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert asyncio.run(check_once("127.0.0.1", port, f"{FIRST_IMEI:014d}")).verdict == "BLACKLISTED"
        # While the supervisor answered, the port went down before worker 0 took it over.
        supervisor = [s for s in seen if s.body.startswith(PARSING)]
        after = [s for s in seen if s.at > supervisor[-1].at and s.healthz is not None]
        gap = after[0].at - supervisor[-1].at if after else 0.0
        print(
            f"\nsupervisor loading seen {supervisor[0].at:.2f}-{supervisor[-1].at:.2f} s; "
            f"worker 0 answering {gap:.2f} s after the supervisor's last answer; ready at {seen[-1].at:.2f} s"
        )
    assert proc.returncode == 0


def test_a_bad_list_ends_the_process_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    write_big_list(bad, 200_000, bad_last_row=True)
    port, http = free_port(), free_port()
    log = tmp_path / "eir.log"
    with serve(write_config(tmp_path, bad, port, http), log) as proc:
        proc.wait(DEADLINE_S)
        assert proc.returncode not in (0, None)
        assert "not-an-imei" in log.read_text(errors="replace")
        assert not accepts(http) and not accepts(port)


# -- in process: the failure paths close the health server -------------------------------


async def test_failed_load_closes_the_health_server(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    write_big_list(bad, 1000, bad_last_row=True)
    node = Node(config_from_mapping(node_config(store={"lists": [{"path": str(bad), "format": "dirbs-blacklist"}]})))
    with pytest.raises(ListFormatError, match=r"bad\.csv:1002: IMEI .not-an-imei."):
        await node.start()
    http = next(p for t, _, p in node.bound if t == "http")
    assert not any(t == "tcp" for t, _, _ in node.bound)
    assert not await asyncio.to_thread(accepts, http)
    assert node.ready() == (False, "shutting down")


async def test_redis_backed_load_reports_loading_then_fails_cleanly() -> None:
    """A Redis that accepts connections and never answers: the node stays in its loading
    state (health up, Diameter closed) until Redis goes away, then start() fails and the
    health server is closed."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    redis = await asyncio.start_server(silent, "127.0.0.1", 0)
    redis_port = redis.sockets[0].getsockname()[1]
    cfg = node_config(store={"backend": "redis", "lists": [], "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"}})
    node = Node(config_from_mapping(cfg))
    start = asyncio.create_task(node.start())
    try:
        deadline = time.monotonic() + 10
        while not held:
            assert not start.done(), start
            assert time.monotonic() < deadline, "the node never asked Redis"
            await asyncio.sleep(0.02)
        http = next(p for t, _, p in node.bound if t == "http")
        assert await asyncio.to_thread(http_get, http, "/healthz") == (200, "ok\n")
        status, body = await asyncio.to_thread(http_get, http, "/readyz")
        assert (status, body) == (503, "loading: reading the lists from Redis\n")
        assert not any(t == "tcp" for t, _, _ in node.bound)
    finally:
        redis.close()
        for w in held:
            w.transport.abort()
    with pytest.raises(StartError, match="cannot load the lists from Redis"):
        await asyncio.wait_for(start, 30)
    assert not await asyncio.to_thread(accepts, http)


# -- the pieces -------------------------------------------------------------------------


def test_progress_describes_each_phase(tmp_path: Path) -> None:
    progress = LoadProgress()
    assert progress.describe() == "starting"
    builder = SnapshotBuilder()
    progress.begin(2, builder)
    progress.reading(0, "black.csv")
    for i in range(3):
        builder.add_imei(f"{FIRST_IMEI + i:014d}", ListKind.BLACK, "black.csv")
    builder.add_tac("86000012", ListKind.GREY, "rules.yaml")
    assert progress.describe() == "reading list 1 of 2 (black.csv), 4 entries so far"
    progress.indexing()
    assert progress.describe() == "indexing 4 entries"
    progress.set_phase("reading the lists from Redis")
    assert progress.describe() == "reading the lists from Redis"

    path = tmp_path / "black.csv"
    write_big_list(path, 5000)
    progress = LoadProgress()
    snapshot = load_lists([ListSpec(str(path), "dirbs-blacklist")], progress=progress)
    assert progress.describe() == "indexing 5000 entries"
    assert snapshot.counts()["black"] == 5000


async def test_in_thread_returns_and_raises() -> None:
    before = sys.getswitchinterval()
    assert await in_thread(lambda: (6 * 7, sys.getswitchinterval()), "t") == (42, LOAD_SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == before

    def fail() -> int:
        raise ListFormatError("x.csv", 3, "bad")

    with pytest.raises(ListFormatError, match=r"x\.csv:3"):
        await in_thread(fail, "t")
    assert sys.getswitchinterval() == before
