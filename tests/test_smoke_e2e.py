"""End to end over real TCP: the sample lists answered as config/lists/README.md says."""

from __future__ import annotations

import pytest

from s13eir.client import S13Client
from tests.conftest import MME_HOST, MME_REALM, EirProcess, RunningNode

SAMPLES = [
    ("35209900176148", None, "BLACKLISTED"),
    ("352099001761481", "001010000000001", "WHITELISTED"),  # exception pair
    ("35209900176148", "001010000000002", "BLACKLISTED"),
    ("35290611000001", None, "GREYLISTED"),
    ("86000012345670", None, "BLACKLISTED"),  # TAC rule
    ("35698700001234", None, "GREYLISTED"),  # range
    ("35450712345675", None, "WHITELISTED"),  # on no list
    ("354507123456750", None, "WHITELISTED"),  # spare digit 0, no Luhn required
]


@pytest.mark.parametrize(("imei", "imsi", "expected"), SAMPLES)
async def test_sample_verdicts(eir: RunningNode, imei: str, imsi: str | None, expected: str) -> None:
    client = S13Client(MME_HOST, MME_REALM)
    await client.connect(eir.host, eir.port)
    try:
        result = await client.check(imei, imsi, "01")
    finally:
        await client.disconnect()
    assert result.verdict == expected
    assert result.result_code == 2001


async def test_many_checks_on_one_connection(eir: RunningNode) -> None:
    client = S13Client(MME_HOST, MME_REALM)
    await client.connect(eir.host, eir.port)
    try:
        for imei, imsi, expected in SAMPLES * 3:
            assert (await client.check(imei, imsi)).verdict == expected
    finally:
        await client.disconnect()


def test_cli_process_serves(eir_process: EirProcess) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "s13eir.cli", "check", "--peer", f"127.0.0.1:{eir_process.port}",
         "--imei", "35209900176148", "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"verdict": "BLACKLISTED"' in out.stdout
