"""Traces (t,imei,imsi,peer[,sv]) and ``s13eir detect`` over them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from s13eir.detection.observation import Location, PeerSite, Rat
from s13eir.detection.trace import TraceError, read_trace
from tests.conftest import node_config

PEERS = {"mme-mad": PeerSite(Rat.EUTRAN, Location("Madrid", 40.4168, -3.7038)),
         "sgsn-bcn": PeerSite(Rat.GERAN_UTRAN, Location("Barcelona", 41.3874, 2.1686))}  # fmt: skip


def rows(*lines: str, header: str = "t,imei,imsi,peer,sv") -> list[str]:
    return [header + "\n", *(line + "\n" for line in lines)]


def test_a_trace_reads_as_observations() -> None:
    got = list(read_trace(rows("0,352099001761481,214010000000001,mme-mad,01",
                               "5,3520990017614803,,sgsn-bcn,"), "t.csv", PEERS))  # fmt: skip
    assert [(o.t, o.imei14, o.imsi, o.rat, o.sv, o.imei15) for o in got] == [
        (0.0, "35209900176148", "214010000000001", Rat.EUTRAN, "01", "352099001761481"),
        (5.0, "35209900176148", None, Rat.GERAN_UTRAN, "03", None),  # an IMEISV: its SV
    ]
    assert list(read_trace(rows("1,35209900176148,214010000000001,mme-mad", header="t,imei,imsi,peer"), "t", PEERS))


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (["imei,t,imsi,peer"], 1, "header"),
        (["t,imei,imsi,peer", "0,3520990017614,,mme-mad"], 2, "imei"),
        (["t,imei,imsi,peer", "0,35209900176148,,mme-mad", "x,35209900176148,,mme-mad"], 3, "t:"),
        (["t,imei,imsi,peer", "5,35209900176148,,mme-mad", "4,35209900176148,,mme-mad"], 3, "before"),
        (["t,imei,imsi,peer", "0,35209900176148,,mme-elsewhere"], 2, "configured peer"),
        (["t,imei,imsi,peer", "0,35209900176148,12ab,mme-mad"], 2, "imsi"),
        (["t,imei,imsi,peer,sv", "0,3520990017614803,,mme-mad,04"], 2, "differs"),
        (["t,imei,imsi,peer", "0,35209900176148,,mme-mad,extra"], 2, "fields"),
    ],
)
def test_a_bad_row_is_refused_with_its_line(lines: list[str], line: int, message: str) -> None:
    with pytest.raises(TraceError) as err:
        list(read_trace([x + "\n" for x in lines], "trace.csv", PEERS))
    assert err.value.line == line and message in err.value.message and str(err.value).startswith(f"trace.csv:{line}:")


def detect(tmp_path: Path, trace: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "s13eir.cli", "detect", "--trace", str(trace), "--config", str(_config(tmp_path))]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path) -> Path:
    cfg: dict[str, Any] = node_config()
    cfg["peers"]["list"] = [
        {"origin_host": "mme-mad", "origin_realm": "s13eir.test",
         "location": {"region": "Madrid", "lat": 40.4168, "lon": -3.7038}},
        {"origin_host": "mme-bcn", "origin_realm": "s13eir.test",
         "location": {"region": "Barcelona", "lat": 41.3874, "lon": 2.1686}},
    ]  # fmt: skip
    cfg["detection"] = {"enabled": True, "rules": {"time_distance": {"action": "block"}}}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_detect_prints_the_cases_of_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join([
        "t,imei,imsi,peer,sv",
        "0,35209900176148,214010000000001,mme-mad,01",  # the owner in Madrid ...
        "0,35450712345675,214010000000003,mme-mad,01",  # a traveller in Madrid
        "300,35209900176148,214010000000002,mme-bcn,01",  # ... a clone in Barcelona 5 minutes later
        "3600,35450712345675,214010000000003,mme-mad,01",
        "9000,35450712345675,214010000000003,mme-bcn,01",  # the traveller flew: same SIM
        "9100,00101500000000,214010000000004,mme-mad,01",  # a test TAC on the network
    ]) + "\n")  # fmt: skip
    r = detect(tmp_path, trace, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    cases = {c["imei"]: c for c in out["cases"]}
    assert set(cases) == {"35209900176148", "00101500000000"}
    clone = cases["35209900176148"]
    assert clone["rules"] == {"time_distance": 1} and clone["action"] == "block"
    assert clone["imsis"] == ["214010000000001", "214010000000002"] and len(clone["evidence"]) == 2
    assert cases["00101500000000"]["rules"] == {"invalid_identifier": 1}
    assert out["summary"]["sightings"] == 6 and out["summary"]["cases"] == 2
    text = detect(tmp_path, trace)
    assert "35209900176148  block" in text.stdout and "6 sightings, 2 cases" in text.stderr


def test_detect_refuses_a_bad_trace_with_its_line(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t,imei,imsi,peer\n0,35209900176148,,mme-mad\n1,35209900176148,,mme-nowhere\n")
    r = detect(tmp_path, trace)
    assert r.returncode == 2 and f"{trace}:3: peer" in r.stderr
