"""What the load-generator tests (S13 and N5g-eir) share: running ``s13eir load`` in
process, the keys its JSON report must have, and a config naming the sample lists."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from s13eir.loadgen.cli import add_load_parser, load_main
from tests.conftest import ROOT

JSON_KEYS = {
    "requests",
    "answers",
    "answers_per_s",
    "latency_us",
    "result_codes",
    "equipment_status",
    "mismatches",
    "timeouts",
    "errors",
    "params",
}


def load_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="s13eir")
    add_load_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["load", *argv])


async def run_load(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    """``s13eir load ARGV`` with a fixed seed; its exit code and JSON report."""
    out = tmp_path / "load.json"
    rc = await load_main(load_args(*argv, "--json", str(out), "--no-live", "--seed", "11"))
    return rc, json.loads(out.read_text())


def sample_config(tmp_path: Path, unknown_imei: str | None = None) -> Path:
    """config/eir.yaml with absolute paths to the sample lists (the lists the nodes serve)."""
    cfg = yaml.safe_load((ROOT / "config" / "eir.yaml").read_text())
    if unknown_imei is not None:
        cfg["policy"]["unknown_imei"] = unknown_imei
    for entry in cfg["store"]["lists"]:
        entry["path"] = str(ROOT / "config" / entry["path"])
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
