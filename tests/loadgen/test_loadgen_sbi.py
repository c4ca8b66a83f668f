"""``s13eir load --sbi``: simulated AMFs over N5g-eir (HTTP/2) against an in-process node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from s13eir.config_loading import config_from_mapping
from s13eir.loadgen.amf import SbiUrlError, parse_sbi_url, pei_path
from s13eir.loadgen.cli import load_main
from s13eir.loadgen.imeis import Combo
from tests.conftest import node_config, running_node
from tests.load_helpers import JSON_KEYS, load_args, run_load, sample_config

MIX = "black=0.1,grey=0.1,unknown=0.1,malformed=0.05,exception=0.02"


@contextlib.asynccontextmanager
async def _sbi_eir(unknown_imei: str) -> AsyncIterator[str]:
    """A node with the sample lists serving N5g-eir on a free port; yields its URL."""
    cfg = node_config(sbi={"address": "127.0.0.1", "port": 0})
    cfg.setdefault("policy", {})["unknown_imei"] = unknown_imei
    async with running_node(config_from_mapping(cfg)) as rn:
        port = next(p for t, _, p in rn.node.bound if t == "sbi")
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("loop", "unknown_imei"), [(("--concurrency", "8"), "unknown"), (("--rate", "800"), "whitelisted")]
)
async def test_sbi_load_against_an_eir(tmp_path: Path, loop: tuple[str, str], unknown_imei: str) -> None:
    eir_config = sample_config(tmp_path, unknown_imei)
    async with _sbi_eir(unknown_imei) as url:
        rc, result = await run_load(
            tmp_path, "--sbi", url, "--config", str(eir_config), "--mmes", "2", "--mix", MIX,
            "--duration", "1.5", "--warmup", "0.2", *loop,
        )  # fmt: skip
    assert result.keys() >= JSON_KEYS
    assert result["errors"] == 0, (result["error_kinds"], result["error_examples"])
    assert result["mismatches"] == 0, result["mismatch_examples"]
    if loop[0] == "--rate":
        # Open loop over HTTP/2: a request due while the node's SETTINGS_MAX_CONCURRENT_STREAMS
        # (128) are all open is not sent, and counted as dropped (and as a timeout). On a loaded
        # machine a stall of a few hundred ms does that; every other request must be answered.
        assert result["timeouts"] == result["dropped"]
        assert result["answers"] == result["requests"] - result["dropped"] > 0
    else:
        assert result["timeouts"] == 0
        assert result["requests"] > 0 and result["answers"] == result["requests"]
    assert rc == (0 if result["timeouts"] == 0 else 1)  # a drop fails the run, as a timeout does
    codes = result["result_codes"]
    assert sum(codes.values()) == result["answers"]
    assert {"http-200", "http-400"} <= codes.keys()
    assert ("http-404" in codes) == (unknown_imei == "unknown")  # ERROR_EQUIPMENT_UNKNOWN, restrictive mode only
    assert {"WHITELISTED", "BLACKLISTED", "GREYLISTED"} <= result["equipment_status"].keys()
    assert sum(result["equipment_status"].values()) == codes["http-200"]
    assert result["mmes_connected"] == 2
    assert result["params"]["interface"] == "sbi" and result["params"]["peer"] == url
    assert result["warmup"]["requests"] > 0
    if loop[0] == "--rate":
        assert 1000 <= result["requests"] <= 1201
        assert result["send_lag_us"] is not None


async def test_sbi_usage_errors(tmp_path: Path) -> None:
    assert await load_main(load_args("--sbi", "https://127.0.0.1:8080", "--no-live")) == 2
    assert await load_main(load_args("--sbi", "http://127.0.0.1:8080", "--peer", "127.0.0.1:3868", "--no-live")) == 2
    assert await load_main(load_args("--sbi", "http://127.0.0.1:99999", "--no-live")) == 2
    assert await load_main(load_args("--sbi", "http://127.0.0.1:8080", "--echo", "--no-live")) == 2


def test_sbi_url_and_paths() -> None:
    assert parse_sbi_url("http://127.0.0.1:8080") == ("127.0.0.1", 8080, "")
    assert parse_sbi_url("http://eir.example/api/") == ("eir.example", 80, "/api")
    with pytest.raises(SbiUrlError):
        parse_sbi_url("127.0.0.1:8080")
    resource = "/n5g-eir-eic/v1/equipment-status"
    assert pei_path(Combo("35209900176148", None, None, 1, "black")) == f"{resource}?pei=imei-352099001761481".encode()
    assert (
        pei_path(Combo("352099001761480", "001010000000001", None, 0, "exception"), "/x")
        == f"/x{resource}?pei=imei-352099001761480&supi=imsi-001010000000001".encode()
    )
    assert pei_path(Combo("3520990017X148", None, None, 5004, "malformed")).endswith(b"pei=imei-3520990017X148")


async def test_sbi_load_with_two_processes(tmp_path: Path) -> None:
    eir_config = sample_config(tmp_path, "unknown")
    async with _sbi_eir("unknown") as url:
        rc, result = await run_load(
            tmp_path, "--sbi", url, "--config", str(eir_config), "--mmes", "2", "--procs", "2", "--mix", MIX,
            "--duration", "0.5", "--warmup", "0.2", "--concurrency", "4",
        )  # fmt: skip
    assert result["errors"] == 0 and result["mismatches"] == 0 and result["timeouts"] == 0, result
    assert result["answers"] == result["requests"] > 0 and rc == 0
    assert result["mmes_connected"] == 2 and result["params"]["procs"] == 2
