"""SIGHUP reload of the list files on a running ``s13eir serve`` process."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

from s13eir.client import check_once
from tests.conftest import SAMPLE_LISTS, start_eir_process, stop_eir_process

NEW_IMEI = "35111122223333"


def verdict(port: int, imei: str) -> str:
    return asyncio.run(check_once("127.0.0.1", port, imei)).verdict


def wait_for_log(p: object, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = p.log()  # type: ignore[attr-defined]
        if text in log:
            return str(log)
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged: {p.log()}")  # type: ignore[attr-defined]


def test_sighup_applies_a_good_file_and_keeps_lists_on_a_bad_one(tmp_path: Path) -> None:
    black = tmp_path / "blacklist.csv"
    shutil.copy(SAMPLE_LISTS / "blacklist.csv", black)
    lists = [{"path": str(black), "format": "dirbs-blacklist"}]
    p = start_eir_process(tmp_path, store={"lists": lists})
    try:
        assert verdict(p.port, NEW_IMEI) == "WHITELISTED"
        assert verdict(p.port, "35209900176148") == "BLACKLISTED"

        # A good file: the new IMEI is blocked after SIGHUP, the removed one is not.
        black.write_text(f"imei,block_date,reasons\n{NEW_IMEI},20261128,reported stolen\n")
        p.proc.send_signal(signal.SIGHUP)
        wait_for_log(p, '"lists_reloaded"')
        assert verdict(p.port, NEW_IMEI) == "BLACKLISTED"
        assert verdict(p.port, "35209900176148") == "WHITELISTED"

        # A bad file (line 3 has letters in the IMEI): rejected with file and line, lists kept.
        black.write_text("imei,block_date,reasons\n35209900176148,20261128,stolen\n3520990017614X,20261128,x\n")
        p.proc.send_signal(signal.SIGHUP)
        log = wait_for_log(p, '"lists_reload_failed"')
        assert f"{black}:3" in log
        assert verdict(p.port, NEW_IMEI) == "BLACKLISTED"
        assert verdict(p.port, "35209900176148") == "WHITELISTED"
        assert p.proc.poll() is None
    finally:
        stop_eir_process(p)


def test_sighup_guards_refuse_an_emptied_or_shrunk_list_and_sigusr1_forces(tmp_path: Path) -> None:
    """Regression: a header-only blacklist emptied the list on SIGHUP, and a file 90% smaller
    was accepted, both logged at info. Now sync.guards refuse them (error log, counted), the
    lists in force stay, and SIGUSR1 loads the files anyway."""
    black = tmp_path / "blacklist.csv"
    rows = [f"35209901{i:06d}" for i in range(300)]
    header = "imei,block_date,reasons\n"
    black.write_text(header + "".join(f"{imei},20261128,stolen\n" for imei in rows))
    p = start_eir_process(tmp_path, store={"lists": [{"path": str(black), "format": "dirbs-blacklist"}]})
    try:
        assert verdict(p.port, rows[0]) == verdict(p.port, rows[-1]) == "BLACKLISTED"
        black.write_text(header)  # header only: would unblock all 300
        p.proc.send_signal(signal.SIGHUP)
        log = wait_for_log(p, '"lists_reload_refused"')
        assert "black: size: 300 -> 0 entries" in log
        assert verdict(p.port, rows[-1]) == "BLACKLISTED"

        black.write_text(header + "".join(f"{imei},20261128,stolen\n" for imei in rows[:30]))  # 90% smaller
        p.proc.send_signal(signal.SIGHUP)
        wait_for_log(p, "300 -> 30 entries")
        assert verdict(p.port, rows[-1]) == "BLACKLISTED"
        assert '"lists_reloaded"' not in p.log()

        p.proc.send_signal(signal.SIGUSR1)  # the operator decides
        wait_for_log(p, '"lists_reload_forced"')
        wait_for_log(p, '"lists_reloaded"')
        assert verdict(p.port, rows[-1]) == "WHITELISTED"
        assert verdict(p.port, rows[0]) == "BLACKLISTED"
        assert p.proc.poll() is None
    finally:
        stop_eir_process(p)
