"""The ``s13eir`` command itself: what each command imports, ``check``'s own client, and
``python -m s13eir``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict

import pytest

import s13eir
from s13eir import cli
from s13eir.checker import CheckResult, check_imei
from s13eir.client import S13Client
from s13eir.config import config_from_mapping

from .conftest import MME_HOST, MME_REALM, EirProcess, RunningNode, node_config, running_node
from .test_smoke_e2e import SAMPLES

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
