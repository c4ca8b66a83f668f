"""The README's commands, run as written against a node started the way it says.

The quick start runs against ``s13eir serve --config config/eir.yaml`` (what ``make run``
does) on free loopback ports instead of the default ones: each command's 127.0.0.1:3868
is rewritten to the node's port, nothing else. Every shown output line must match."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
S13EIR = str(Path(sys.executable).parent / "s13eir")
DEFAULT_PEER = "127.0.0.1:3868"


@dataclass
class Shown:
    argv: list[str]
    output: list[str]


def section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def sh_blocks(text: str) -> list[list[str]]:
    return [b.splitlines() for b in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)]


def transcript(lines: list[str]) -> list[Shown]:
    """``$ command`` lines and the output lines shown under each."""
    shown: list[Shown] = []
    for line in lines:
        if line.startswith("$ "):
            shown.append(Shown(shlex.split(line[2:], comments=True), []))
        elif shown and line.strip():
            shown[-1].output.append(re.sub(r"\s{2,}#.*$", "", line).rstrip())
    return shown


def localized(argv: list[str], port: int) -> list[str]:
    exe = {".venv/bin/s13eir": S13EIR, "s13eir": S13EIR}
    return [exe.get(argv[0], argv[0]), *(a.replace(DEFAULT_PEER, f"127.0.0.1:{port}") for a in argv[1:])]


def matches(shown: str, got: str) -> bool:
    if shown.endswith(", ...}"):
        # A JSON line shown in part: the keys it shows, with those values.
        want = json.loads(shown[: -len(", ...}")] + "}")
        have = json.loads(got)
        return all(have.get(k) == v for k, v in want.items())
    return shown == got


def wait_ready(metrics: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"s13eir serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("the node was not ready within 60 s")


@pytest.fixture(scope="module")
def node() -> Iterator[int]:
    port, metrics, sbi = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "S13EIR_LISTEN__0__PORT": str(port),
        "S13EIR_METRICS__PORT": str(metrics),
        "S13EIR_SBI__PORT": str(sbi),
    }
    proc = subprocess.Popen(
        [S13EIR, "serve", "--config", "config/eir.yaml"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(metrics, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_opens_with_the_two_commands() -> None:
    first = sh_blocks(README.split("\n## ", 1)[0])[0]
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]
    run = re.search(r"^run: .*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert run and run.group(1) == "$(BIN)/s13eir serve --config $(CONFIG)"


def test_quick_start_as_written(node: int) -> None:
    shown = [s for block in sh_blocks(section("Quick start")) for s in transcript(block)]
    assert len(shown) >= 4
    for s in shown:
        proc = subprocess.run(localized(s.argv, node), cwd=ROOT, capture_output=True, text=True, timeout=60)
        got = proc.stdout.splitlines()
        assert len(got) == len(s.output), (s.argv, proc.stdout, proc.stderr)
        for want, have in zip(s.output, got, strict=True):
            assert matches(want, have), (s.argv, want, have)


def test_load_examples_as_written(node: int, tmp_path: Path) -> None:
    lines = [ln for block in sh_blocks(section("Load testing: simulated MMEs")) for ln in block]
    runnable = [shlex.split(ln, comments=True) for ln in lines if "--config config/eir.yaml" in ln]
    assert len(runnable) >= 2
    for i, argv in enumerate(runnable):
        out = tmp_path / f"load{i}.json"
        # Bounded here: 2 s instead of the shown duration (the last --duration wins).
        cmd = [*localized(argv, node), "--duration", "2", "--json", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        report = json.loads(out.read_text())
        assert report["answers"] > 0 and report["mismatches"] == 0 and report["errors"] == 0, report
        assert "3010" not in report["result_codes"], report["result_codes"]
        assert report["mmes_connected"] == report["params"]["mmes"], report


def test_load_refuses_mmes_the_configuration_does_not_list() -> None:
    # Before connecting: the EIR of that configuration would refuse mme5 with 3010.
    proc = subprocess.run(
        [S13EIR, "load", "--peer", "127.0.0.1:1", "--config", "config/eir.yaml", "--mmes", "5", "--duration", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "mme5.s13eir.test" in proc.stderr and "3010 DIAMETER_UNKNOWN_PEER" in proc.stderr
    assert "mme4.s13eir.test" not in proc.stderr
