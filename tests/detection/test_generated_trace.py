"""bench/detection_trace.py's synthetic day, small, through ``s13eir detect``: the cases
are the planted IMEIs (no legitimate phone among them) and every SIM box and tampered
identifier is found."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.conftest import node_config

BENCH = Path(__file__).resolve().parents[2] / "bench" / "detection_trace.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detection_trace", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detect_finds_what_the_generator_planted(tmp_path: Path) -> None:
    gen = generator()
    day = gen.Day(3000, 1, 7)
    trace = tmp_path / "trace.csv"
    day.write(trace)
    cfg: dict[str, Any] = node_config()
    cfg["peers"]["list"] = [
        {"origin_host": p, "origin_realm": "bench.test", "location": {"region": r.region, "lat": r.lat, "lon": r.lon}}
        for p, r in gen.LOCATIONS.items()
    ]
    cfg["detection"] = {"enabled": True}
    config = tmp_path / "eir.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "s13eir.cli", "detect", "--trace", str(trace), "--config", str(config), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    kinds: dict[str, set[str]] = {}
    for d, imei in enumerate(day.imeis):
        kinds.setdefault(imei, set()).add(day.kind[d])
    flagged = {c["imei"] for c in out["cases"]}
    assert flagged and all(kinds[i] & gen.PLANTED for i in flagged), [kinds[i] for i in flagged]
    for kind in ("simbox", "tampered"):
        assert {i for i, k in kinds.items() if kind in k} <= flagged, kind
    assert out["summary"]["sightings"] == len(day.events)
