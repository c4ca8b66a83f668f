"""The ``s13eir`` command itself: what each command imports, ``check``'s own client,
``python -m s13eir``, and the files a configuration names checked before anything starts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

import s13eir
from s13eir import cli
from s13eir.checker import CheckResult, check_imei
from s13eir.client import S13Client
from s13eir.config_loading import config_from_mapping
from tests.conftest import MME_HOST, MME_REALM, ROOT, EirProcess, RunningNode, free_port, node_config, running_node
from tests.test_smoke_e2e import SAMPLES

# Third-party packages that only some commands need; each costs tens to hundreds of ms.
HEAVY = {"diameter", "redis", "h2", "httpx", "jwt", "aiomqtt", "paho", "structlog", "rich", "prometheus_client",
         "rbloom", "uvloop", "hiredis", "msgspec", "yaml"}  # fmt: skip

_PROBE = """
import json, sys
from s13eir.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*argv: str) -> tuple[int, set[str]]:
    """Run ``s13eir ARGV`` in a fresh interpreter: its exit code and the modules it imported."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    return result["code"], set(result["modules"])


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["check", "--help"], ["config", "check", "--help"]])
def test_version_and_help_import_only_the_standard_library(argv: list[str]) -> None:
    code, modules = imported_by(*argv)
    assert code == 0
    assert heavy(modules) == set()
    assert {m for m in modules if m.startswith("s13eir")} == {"s13eir", "s13eir.cli"}


def test_load_help_imports_the_load_generator_only() -> None:
    code, modules = imported_by("load", "--help")
    assert code == 0
    assert "s13eir.loadgen.cli" in modules
    assert not {"s13eir.node", "s13eir.sync.process", "s13eir.sync.lists_cli"} & modules


def test_check_imports_only_the_client_path(eir_process: EirProcess) -> None:
    code, modules = imported_by("check", "--peer", f"127.0.0.1:{eir_process.port}", "--imei", "35209900176148")
    assert code == 0
    assert heavy(modules) == set()
    assert "s13eir.checker" in modules
    assert not {"s13eir.node", "s13eir.config", "s13eir.client", "s13eir.loadgen.cli"} & modules


def test_command_help_lines_are_the_modules_own() -> None:
    """``s13eir --help`` lists load, lists and sync without importing them; the line it
    shows must be the one their own parsers give."""

    def help_lines(parser: argparse.ArgumentParser) -> dict[str, str | None]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {a.dest: a.help for a in action._choices_actions}

    listed = help_lines(cli._parser([]))
    for name in cli.MODULE_COMMANDS:
        assert help_lines(cli._parser([name]))[name] == listed[name]


def test_python_m_s13eir_prints_the_version() -> None:
    out = subprocess.run([sys.executable, "-m", "s13eir", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"s13eir {s13eir.__version__}"


# --- check's own client against the python-diameter one ----------------------------------


def _fields(result: CheckResult) -> dict[str, object]:
    return {k: v for k, v in asdict(result).items() if k != "raw"}


async def _both(rn: RunningNode, imei: str, imsi: str | None, sv: str | None) -> tuple[CheckResult, CheckResult]:
    ours = await check_imei(rn.host, rn.port, imei, imsi, sv, MME_HOST, MME_REALM)
    client = S13Client(MME_HOST, MME_REALM)
    await client.connect(rn.host, rn.port)
    try:
        theirs = await client.check(imei, imsi, sv)
    finally:
        await client.disconnect()
    return ours, theirs


@pytest.mark.parametrize(("imei", "imsi", "expected"), SAMPLES)
async def test_checker_reads_answers_as_python_diameter_does(
    eir: RunningNode, imei: str, imsi: str | None, expected: str
) -> None:
    ours, theirs = await _both(eir, imei, imsi, "01")
    assert ours.verdict == expected
    assert _fields(ours) == _fields(theirs)


async def test_checker_reports_errors_as_python_diameter_does(eir: RunningNode) -> None:
    ours, theirs = await _both(eir, "3545071234567X", None, None)
    assert ours.result_code == 5004
    assert ours.verdict.startswith("ERROR 5004 (") and "3545071234567X" in ours.verdict
    assert _fields(ours) == _fields(theirs)


async def test_checker_reports_equipment_unknown() -> None:
    async with running_node(config_from_mapping(node_config(policy={"unknown_imei": "unknown"}))) as rn:
        ours, theirs = await _both(rn, "35450712345675", None, None)
    assert ours.verdict == "EQUIPMENT_UNKNOWN"
    assert ours.experimental_result_code == 5422
    assert _fields(ours) == _fields(theirs)


# --- files named by the configuration ---------------------------------------------------


def s13eir_cli(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s13eir", *argv], capture_output=True, text=True, timeout=timeout)


def config_naming(tmp_path: Path, **sbi: Any) -> Path:
    """A configuration on free ports whose ``sbi`` section is ``sbi``."""
    cfg = node_config(sbi={"address": "127.0.0.1", "port": free_port(), **sbi})
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": free_port()}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": free_port()}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_check_names_a_missing_certificate(tmp_path: Path) -> None:
    (tmp_path / "eir.key").write_text("key")
    path = config_naming(tmp_path, tls=True, certfile="/nonexistent/tls/eir.pem", keyfile="eir.key")
    out = s13eir_cli("config", "check", str(path))
    assert out.returncode == 2, out.stdout
    assert out.stderr == f"s13eir: {path}: sbi.certfile: /nonexistent/tls/eir.pem: no such file\n"
    assert out.stdout == ""


def test_config_check_names_every_missing_file(tmp_path: Path) -> None:
    path = config_naming(tmp_path, tls=True, certfile="tls/eir.pem", keyfile="tls/eir.key")
    out = s13eir_cli("config", "check", str(path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [  # relative names: from the configuration's directory
        f"s13eir: {path}: sbi.certfile: {tmp_path / 'tls' / 'eir.pem'}: no such file",
        f"s13eir: {path}: sbi.keyfile: {tmp_path / 'tls' / 'eir.key'}: no such file",
    ]


def test_config_check_counts_the_files_it_checked() -> None:
    out = s13eir_cli("config", "check", str(ROOT / "config" / "eir.yaml"))
    assert out.returncode == 0, out.stderr
    assert "  files: 4 named, all readable" in out.stdout.splitlines()


def test_serve_names_a_missing_certificate_before_starting(tmp_path: Path) -> None:
    (tmp_path / "eir.key").write_text("key")
    path = config_naming(tmp_path, tls=True, certfile="/nonexistent/tls/eir.pem", keyfile="eir.key")
    out = s13eir_cli("serve", "--config", str(path))
    assert out.returncode == 2
    assert out.stderr == f"s13eir: {path}: sbi.certfile: /nonexistent/tls/eir.pem: no such file\n"
    assert "Errno" not in out.stderr


def test_serve_ignores_files_only_sync_reads(tmp_path: Path) -> None:
    """A missing snapshot of ``sync.snapshots`` is for ``s13eir sync`` to report: the node
    never reads it. (``config check`` reports it.)"""
    cfg = node_config()
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": free_port()}]
    cfg["metrics"] = {"enabled": True, "address": "127.0.0.1", "port": free_port()}
    cfg["sync"] = {"snapshots": [{"path": "snap/black.csv", "format": "dirbs-blacklist", "list": "black"}]}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    check = s13eir_cli("config", "check", str(path))
    assert check.returncode == 2
    assert f"sync.snapshots[0].path: {tmp_path / 'snap' / 'black.csv'}: no such file" in check.stderr
    log = tmp_path / "eir.log"
    with open(log, "wb") as out:  # serve starts; stopped with SIGTERM once ready
        proc = subprocess.Popen([sys.executable, "-m", "s13eir", "serve", "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert _ready(proc, cfg["metrics"]["port"]), log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)


def _ready(proc: subprocess.Popen[bytes], http_port: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False
