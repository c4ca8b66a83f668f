"""``serve --workers 2``: both workers answer on one port; a killed worker is restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from s13eir.client import check_once
from tests.conftest import free_port, free_port_block, node_config


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _worker_pids(parent: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True)
    return {int(x) for x in out.stdout.split()}


def test_two_workers_share_the_port_and_are_restarted(tmp_path: Path) -> None:
    port, http = free_port(), free_port_block(2)  # metrics: http for worker 0, http + 1 for worker 1
    black = tmp_path / "blacklist.csv"
    black.write_text("imei,block_date,reasons\n35209900176148,20240301,stolen\n")
    cfg = node_config(store={"lists": [{"path": str(black), "format": "dirbs-blacklist"}]})
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sup = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "serve", "--config", str(path), "--workers", "2"])
    try:
        deadline = time.monotonic() + 30
        while not (_ready(http) and _ready(http + 1)):
            assert time.monotonic() < deadline, "workers did not become ready"
            assert sup.poll() is None
            time.sleep(0.1)
        for _ in range(6):
            assert asyncio.run(check_once("127.0.0.1", port, "35209900176148")).verdict == "BLACKLISTED"
        pids = _worker_pids(sup.pid)
        assert len(pids) == 2
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            now = _worker_pids(sup.pid)
            if len(now) == 2 and victim not in now and _ready(http) and _ready(http + 1):
                break
            assert time.monotonic() < deadline, "the killed worker was not restarted"
            time.sleep(0.1)
        assert asyncio.run(check_once("127.0.0.1", port, "35209900176148")).verdict == "BLACKLISTED"

        # SIGHUP: the supervisor re-reads the files once and every worker maps the result.
        black.write_text("imei,block_date,reasons\n35111122223333,20261128,stolen\n")
        sup.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            got = {asyncio.run(check_once("127.0.0.1", port, "35111122223333")).verdict for _ in range(6)}
            if got == {"BLACKLISTED"}:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
        # A bad file is refused by the supervisor: no worker's lists change.
        black.write_text("imei,block_date,reasons\nnot-an-imei,20261128,x\n")
        sup.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        got = {asyncio.run(check_once("127.0.0.1", port, "35111122223333")).verdict for _ in range(6)}
        assert got == {"BLACKLISTED"}
    finally:
        sup.terminate()
        try:
            sup.wait(20)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait(5)
    assert sup.returncode == 0


def test_supervisor_applies_the_reload_guards_and_sigusr1_forces(tmp_path: Path) -> None:
    port, http = free_port(), free_port_block(2)  # metrics: http for worker 0, http + 1 for worker 1
    black = tmp_path / "blacklist.csv"
    header = "imei,block_date,reasons\n"
    rows = [f"35209901{i:06d}" for i in range(300)]
    black.write_text(header + "".join(f"{imei},20261128,stolen\n" for imei in rows))
    cfg = node_config(store={"lists": [{"path": str(black), "format": "dirbs-blacklist"}]})
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sup = subprocess.Popen([sys.executable, "-m", "s13eir.cli", "serve", "--config", str(path), "--workers", "2"])

    def verdicts() -> set[str]:
        return {asyncio.run(check_once("127.0.0.1", port, rows[-1])).verdict for _ in range(6)}

    try:
        deadline = time.monotonic() + 30
        while not (_ready(http) and _ready(http + 1)):
            assert time.monotonic() < deadline, "workers did not become ready"
            assert sup.poll() is None
            time.sleep(0.1)
        assert verdicts() == {"BLACKLISTED"}
        black.write_text(header)  # header only: refused by the guards, no worker changes
        sup.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert verdicts() == {"BLACKLISTED"}
        sup.send_signal(signal.SIGUSR1)  # forced
        deadline = time.monotonic() + 15
        while (got := verdicts()) != {"WHITELISTED"}:
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
    finally:
        sup.terminate()
        try:
            sup.wait(20)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait(5)
    assert sup.returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped: its parent was killed) counts as gone.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    """kill -9 of the supervisor: its workers stop (the lifeline pipe), /dev/shm is left
    clean, and a new supervisor starts on the same ports."""
    port, http = free_port(), free_port_block(2)  # metrics: http for worker 0, http + 1 for worker 1
    black = tmp_path / "blacklist.csv"
    black.write_text("imei,block_date,reasons\n35209900176148,20240301,stolen\n")
    cfg = node_config(store={"lists": [{"path": str(black), "format": "dirbs-blacklist"}]})
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": http}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    cmd = [sys.executable, "-m", "s13eir.cli", "serve", "--config", str(path), "--workers", "2"]
    sup = subprocess.Popen(cmd)
    second: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 30
        while not (_ready(http) and _ready(http + 1)):
            assert time.monotonic() < deadline and sup.poll() is None, "workers did not become ready"
            time.sleep(0.1)
        workers = _worker_pids(sup.pid)
        assert len(workers) == 2
        assert list(shm.glob(f"s13eir-{sup.pid}-*"))
        sup.kill()
        sup.wait(5)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in workers):
            assert time.monotonic() < deadline, "the workers outlived their supervisor"
            time.sleep(0.1)
        assert not list(shm.glob(f"s13eir-{sup.pid}-*")), "the shared lists were left in /dev/shm"
        second = subprocess.Popen(cmd)
        deadline = time.monotonic() + 30
        while not (_ready(http) and _ready(http + 1)):
            assert time.monotonic() < deadline and second.poll() is None, "a new supervisor could not start"
            time.sleep(0.1)
        assert asyncio.run(check_once("127.0.0.1", port, "35209900176148")).verdict == "BLACKLISTED"
    finally:
        for p in (sup, second):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
