"""``s13eir cases list|show|close``: on the cluster's cases in a real redis-server, and on
an embedded node's metrics port; closing, reopening, and the errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from s13eir.cli import main
from s13eir.config_loading import config_from_mapping
from s13eir.detection.detector import Detector
from s13eir.detection.observation import Observation, Rat
from s13eir.detection.rules import DetectionConfig
from s13eir.detection_shared import SharedDetection
from tests.conftest import node_config, running_node
from tests.detection.test_detector import PEERS, imsi
from tests.detection.test_node_detection import CLONED, TEST_TAC, answers, config
from tests.services import RedisServer

T0 = 1.8e9


def write_config(tmp_path: Path, **overrides: Any) -> str:
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(node_config(**overrides)))
    return str(path)


async def clone_case(url: str, imei: str, t: float = T0, second: int = 2) -> None:
    """Madrid then Barcelona a minute apart, through the shared path as a node writes it."""
    shared = SharedDetection(aioredis.Redis.from_url(url), "s13eir", Detector(DetectionConfig(enabled=True), PEERS))
    try:
        for o in (Observation(t, imei, imsi(1), "mme-mad", Rat.EUTRAN),
                  Observation(t + 60, imei, imsi(second), "mme-bcn", Rat.EUTRAN)):  # fmt: skip
            await shared.add_cases(await shared.observe([o], o.t))
    finally:
        await shared.redis.aclose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["cases", *argv])
    out, err = capsys.readouterr()
    # A node running in this process logs to stdout too: keep the command's own lines.
    out = "".join(line for line in out.splitlines(keepends=True) if "[s13eir." not in line)
    return rc, out, err


def test_cases_in_redis_listed_shown_closed_and_reopened(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(clone_case(redis_server.url, CLONED))
    cfg = write_config(tmp_path, store={"backend": "redis", "lists": [], "redis": {"url": redis_server.url}})
    rc, out, _ = run(capsys, "list", "--config", cfg, "--json")
    assert rc == 0
    (case,) = json.loads(out)["cases"]
    assert case["imei"] == CLONED and case["rules"] == {"time_distance": 1} and case["status"] == "open"
    rc, out, _ = run(capsys, "list", "--config", cfg)
    assert (
        rc == 0
        and out.startswith(f"{CLONED}  open    observe   2 IMSI(s)  2027-01-15 08:01:00")
        and "time_distance" in out
    )
    rc, out, _ = run(capsys, "show", CLONED + "5", "--config", cfg)  # a 15th digit is ignored
    assert rc == 0 and "Madrid to Barcelona" in out and "mme-bcn" in out and imsi(2) in out
    rc, out, _ = run(
        capsys, "close", CLONED, "--config", cfg, "--note", "owner and a second SIM", "--by", "ana", "--json"
    )
    assert rc == 0
    closed = json.loads(out)
    assert closed["status"] == "closed" and closed["closed"]["by"] == "ana"
    assert closed["closed"]["note"] == "owner and a second SIM"
    rc, out, _ = run(capsys, "list", "--config", cfg, "--json")
    assert rc == 0 and json.loads(out)["cases"] == []  # open ones by default
    rc, out, _ = run(capsys, "list", "--config", cfg, "--json", "--status", "closed")
    assert [c["imei"] for c in json.loads(out)["cases"]] == [CLONED]
    # Seen again with a third subscriber, a day later: the case opens again, counted.
    asyncio.run(clone_case(redis_server.url, CLONED, T0 + 86400, second=3))
    rc, out, _ = run(capsys, "show", CLONED, "--config", cfg, "--json")
    again = json.loads(out)
    assert again["status"] == "open" and again["reopened"] == 1 and again["closed"]["by"] == "ana"
    rc, out, _ = run(capsys, "show", CLONED, "--config", cfg)
    assert "reopened 1x" in out and "closed    " in out


def test_cases_errors(redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, store={"backend": "redis", "lists": [], "redis": {"url": redis_server.url}})
    rc, _, err = run(capsys, "show", "35209900176148", "--config", cfg)
    assert rc == 1 and "no case for 35209900176148" in err
    rc, _, err = run(capsys, "close", "35209900176148", "--config", cfg, "--note", "x")
    assert rc == 1 and "no case" in err
    rc, _, err = run(capsys, "show", "3520990017614X", "--config", cfg)
    assert rc == 2 and "not an IMEI" in err
    redis_server.kill()
    rc, _, err = run(capsys, "list", "--config", cfg)
    assert rc == 3 and "does not answer" in err


def test_cases_masked_as_the_configuration_says(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(clone_case(redis_server.url, CLONED))
    cfg = write_config(tmp_path, store={"backend": "redis", "lists": [], "redis": {"url": redis_server.url}},
                       logging={"mask_imsi": True})  # fmt: skip
    rc, out, _ = run(capsys, "show", CLONED, "--config", cfg, "--json")
    assert rc == 0 and imsi(1) not in out and json.loads(out)["imsis"] == ["21401********01", "21401********02"]


async def test_cases_of_an_embedded_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_node(config(True)) as rn:
        await answers(rn)
        url = f"http://127.0.0.1:{rn.http_port}"
        cfg = write_config(tmp_path)
        for _ in range(100):
            rc, out, _ = await asyncio.to_thread(run, capsys, "list", "--config", cfg, "--url", url, "--json")
            if rc == 0 and len(json.loads(out)["cases"]) == 2:
                break
            await asyncio.sleep(0.1)
        assert {c["imei"] for c in json.loads(out)["cases"]} == {CLONED, TEST_TAC}
        rc, out, _ = await asyncio.to_thread(run, capsys, "show", TEST_TAC, "--config", cfg, "--url", url)
        assert rc == 0 and "invalid_identifier" in out
        rc, _, err = await asyncio.to_thread(run, capsys, "show", "35209900176148", "--config", cfg, "--url", url)
        assert rc == 1
        rc, _, err = await asyncio.to_thread(run, capsys, "close", CLONED, "--config", cfg, "--url", url, "--note", "x")
        assert rc == 2 and "needs the shared store" in err
    assert config_from_mapping(node_config()).store.backend == "embedded"


def test_closed_cases_are_purged_and_open_ones_kept(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(clone_case(redis_server.url, CLONED))
    asyncio.run(clone_case(redis_server.url, "35209900176148"))
    cfg = write_config(tmp_path, store={"backend": "redis", "lists": [], "redis": {"url": redis_server.url}})
    assert run(capsys, "close", CLONED, "--config", cfg, "--note", "done")[0] == 0
    rc, out, _ = run(capsys, "purge", "--days", "1", "--config", cfg, "--json")
    assert rc == 0 and json.loads(out) == {"purged": 0}  # closed just now: not a day ago
    rc, out, _ = run(capsys, "purge", "--days", "0", "--config", cfg, "--json")
    assert rc == 0 and json.loads(out) == {"purged": 1}
    rc, out, _ = run(capsys, "list", "--status", "all", "--config", cfg, "--json")
    assert [c["imei"] for c in json.loads(out)["cases"]] == ["35209900176148"]  # the open one stays
    assert run(capsys, "show", CLONED, "--config", cfg)[0] == 1
