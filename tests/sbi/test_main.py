"""``python -m s13eir.sbi``: the standalone N5g-eir runner used for benchmarks, end to end."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import yaml

from tests.conftest import free_port, node_config
from tests.sbi_helpers import PEI_BLACK, RESOURCE, h2_client


async def test_serves_a_configuration_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    cfg = node_config(sbi={"address": "127.0.0.1", "port": port}, logging={"level": "info"})
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "s13eir.sbi", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"sbi_listening" not in await proc.stderr.readline():
                pass
        async with h2_client(f"http://127.0.0.1:{port}") as client:
            r = await client.get(RESOURCE, params={"pei": PEI_BLACK})
            assert r.json() == {"status": "BLACKLISTED"}
        async with asyncio.timeout(10):
            while b'"verdict"' not in (line := await proc.stderr.readline()):
                assert line, "no verdict line logged"
        assert b'"status":"BLACKLISTED"' in line and b'"interface":"n5g-eir"' in line
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0


async def test_refuses_a_configuration_without_sbi(tmp_path: Path) -> None:
    path = tmp_path / "eir.yaml"
    path.write_text(yaml.safe_dump(node_config()))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "s13eir.sbi", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"no sbi: section" in err
