"""The GSMA TAC database in a real redis-server (``s13eir tacs import``): generations,
guards, a bad file changing nothing; and a node and its detection worker reading it: the
model in verdict lines, the technology rule live, the model in the case."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
import yaml

from s13eir.cli import main
from s13eir.config_loading import config_from_mapping
from s13eir.tac_store import load_tac_db
from tests import mme as M
from tests.conftest import node_config, running_node
from tests.detection.test_node_detection import PEERS, http_get
from tests.detection.test_tac_db import HEADER, ROWS
from tests.lists.test_redis_node import BLACK, redis_config, seed
from tests.services import RedisServer


def write_tacs(path: Path, *rows: str) -> str:
    path.write_text(HEADER + "\n" + "".join(r + "\n" for r in rows))
    return str(path)


def many(n: int) -> list[str]:
    """n rows of made-up TACs after the sample's three."""
    return [*ROWS, *(f"9{i:07d}|M{i}|M{i}|Maker|GSM 900|01-Jan-2021|US|X|X|X|X|X|X|N|N|N|Feature phone"
                     for i in range(n))]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    rc = main(["tacs", *argv])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return rc, json.loads(lines[-1]) if lines else None, err


def test_imports_are_generations_with_guards(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "eir.yaml"
    cfg.write_text(yaml.safe_dump(redis_config(redis_server)))
    rc, out, _ = run(capsys, "import", write_tacs(tmp_path / "a.txt", *many(97)), "--config", str(cfg))
    assert rc == 0 and out["generation"] == 1 and out["tacs"] == 100 and out["before"] == 0
    # A truncated export (a tenth of the TACs gone) is refused, and nothing changes.
    rc, _, err = run(capsys, "import", write_tacs(tmp_path / "b.txt", *many(87)), "--config", str(cfg))
    assert rc == 1 and "a drop of more than 5%" in err
    assert run(capsys, "status", "--config", str(cfg))[1]["generation"] == 1
    # A row that does not read: its file and line, nothing written.
    bad = write_tacs(tmp_path / "c.txt", *many(97)[:50], "3520990X|x|x|x|x|01-Jan-2020|x|x|x|x|x|x|x|x|x|x|x")
    rc, _, err = run(capsys, "import", bad, "--config", str(cfg))
    assert rc == 2 and "c.txt:52" in err and "not 8 digits" in err
    rc, out, _ = run(capsys, "import", write_tacs(tmp_path / "b.txt", *many(87)), "--config", str(cfg), "--force")
    assert rc == 0 and out["generation"] == 2 and out["before"] == 100  # nothing refused took a generation
    rc, out, _ = run(capsys, "import", write_tacs(tmp_path / "d.txt", *many(90)), "--config", str(cfg))
    assert rc == 0 and out["generation"] == 3

    async def stored() -> tuple[int, Any, list[bytes]]:
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            loaded = await load_tac_db(r, "s13eir")
            assert loaded is not None
            return loaded[0], loaded[1], sorted(await r.keys("s13eir:tacdb:g:*"))
        finally:
            await r.aclose()

    gen, db, keys = asyncio.run(stored())
    assert gen == 3 and len(db) == 93
    assert db.describe("35209900") == {
        "model": "Phone S",
        "device_type": "Smartphone",
        "manufacturer": "Example Mobile",
    }
    # The one before is kept (a rollback away); older ones are gone.
    assert keys == [b"s13eir:tacdb:g:2", b"s13eir:tacdb:g:2:info", b"s13eir:tacdb:g:3", b"s13eir:tacdb:g:3:info"]


def test_embedded_nodes_read_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "eir.yaml"
    cfg.write_text(yaml.safe_dump(node_config()))
    rc, _, err = run(capsys, "import", write_tacs(tmp_path / "a.txt", *ROWS), "--config", str(cfg))
    assert rc == 2 and "detection.tac_database" in err


async def test_a_node_names_the_device_and_its_worker_runs_the_tac_rules(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(redis_server)
    cfg = redis_config(redis_server)
    cfg["peers"] = {"list": PEERS}
    cfg["detection"] = {"enabled": True, "rules": {"unexpected_technology": {"enabled": True}}}
    cfg["logging"] = {"level": "info"}
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tacs = write_tacs(tmp_path / "t.txt", *ROWS)
    assert await asyncio.to_thread(main, ["tacs", "import", tacs, "--config", str(path)]) == 0
    gsm_only = "35450712000017"  # "FP 1", a GSM feature phone, seen on an MME (LTE)
    async with running_node(config_from_mapping(cfg)) as rn:
        tacs = rn.node.tacs
        assert tacs is not None
        deadline = time.monotonic() + 10
        while tacs.db is None:  # read in the background, beside the lists
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert len(tacs.db) == 3
        with structlog.testing.capture_logs() as logs:
            for imei in (BLACK, gsm_only):
                m = await M.Mme.open(rn.host, rn.port, origin_host="mme1.s13eir.test")
                try:
                    await m.request(M.to_bytes(M.ecr(imei, "214010000000001", origin_host="mme1.s13eir.test")))
                finally:
                    await m.close()
        (black,) = [e for e in logs if e["event"] == "verdict" and e.get("imei") == BLACK]
        assert black["model"] == "Phone S" and black["device_type"] == "Smartphone" and black["list"] == "black"
        deadline = time.monotonic() + 10
        while True:
            status, body = await http_get(rn, f"/cases/{gsm_only}")
            if status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        case = json.loads(body)
        assert status == 200 and case["rules"] == {"unexpected_technology": 1}
        assert case["model"] == "FP 1" and case["device_type"] == "Feature phone"
        assert "FP 1 (2g3g) seen on lte" in case["details"][0]
