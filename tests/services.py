"""Real redis-server and mosquitto processes for tests, on free loopback ports.

Never the machine's default ports: each server gets a port picked at start, a
private directory, and no persistence unless a test asks for it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class _Server:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        _wait_port(self.port, self.proc, self.name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisServer(_Server):
    name = "redis"

    def __init__(self, workdir: Path, persist: bool = False) -> None:
        super().__init__(workdir)
        self.persist = persist

    def command(self) -> list[str]:
        exe = shutil.which("redis-server")
        assert exe is not None
        args = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir)]
        if self.persist:
            return [*args, "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        return [*args, "--save", "", "--appendonly", "no"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class MosquittoBroker(_Server):
    name = "mosquitto"

    def command(self) -> list[str]:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else "")
            # As root, mosquitto drops to the "mosquitto" user, which cannot write its
            # persistence file in a private test directory: sessions would not survive a restart.
        )
        return [exe, "-c", str(conf)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def require(binary: str) -> None:
    if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
        pytest.skip(f"{binary} is not installed (apt-get install {binary})")
