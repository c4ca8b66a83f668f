"""``s13eir load --trace``: a trace replayed live against a node with detection on opens
the cases that ``s13eir detect`` finds in the same trace offline."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from s13eir.config_loading import config_from_mapping
from tests.conftest import node_config, running_node
from tests.detection.test_node_detection import PEERS, http_get

TRACE = "\n".join([
    "t,imei,imsi,peer,sv",
    "0,35450712345675,214010000000001,mme1.s13eir.test,01",  # the owner in Madrid
    "0.5,35209900176148,214010000000005,mme1.s13eir.test,01",  # a blacklisted phone
    "1,35450712345675,214010000000002,mme2.s13eir.test,01",  # a clone in Barcelona, a second later
    "2,001015000000170,214010000000003,mme1.s13eir.test,02",  # a test TAC, 15 digits
    "3,35290611000001,214010000000004,mme2.s13eir.test,01",  # greylisted, nothing to detect
]) + "\n"  # fmt: skip


async def run(*args: str) -> tuple[int, str, str]:
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "s13eir.cli", *args, stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_replayed_trace_opens_the_cases_detect_finds(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    cfg: dict[str, Any] = node_config(peers={"list": PEERS}, detection={"enabled": True})
    config = tmp_path / "eir.yaml"
    config.write_text(yaml.safe_dump(cfg))
    rc, out, err = await run("detect", "--trace", str(trace), "--config", str(config), "--json")
    assert rc == 0, err
    offline = {c["imei"]: c["rules"] for c in json.loads(out)["cases"]}
    assert offline == {"35450712345675": {"time_distance": 1}, "00101500000017": {"invalid_identifier": 1}}
    async with running_node(config_from_mapping(cfg)) as rn:
        result = tmp_path / "replay.json"
        rc, out, err = await run("load", "--trace", str(trace), "--peer", f"127.0.0.1:{rn.port}",
                                 "--speedup", "10", "--json", str(result))  # fmt: skip
        assert rc == 0, out + err
        replayed = json.loads(result.read_text())
        assert replayed["rows"] == replayed["answered"] == 5 and replayed["mmes"] == 2
        assert replayed["verdicts"] == {"WHITELISTED": 3, "BLACKLISTED": 1, "GREYLISTED": 1}
        deadline = time.monotonic() + 10
        while True:
            live = {c["imei"]: c["rules"] for c in json.loads((await http_get(rn, "/cases"))[1])["cases"]}
            if len(live) >= len(offline) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert live == offline


async def test_a_bad_trace_is_refused_with_its_line(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t,imei,imsi,peer\n0,123,,mme1.s13eir.test\n")
    rc, _, err = await run("load", "--trace", str(trace), "--peer", "127.0.0.1:1")
    assert rc == 2 and f"{trace}:2: imei" in err
