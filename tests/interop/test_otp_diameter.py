"""Erlang/OTP's ``diameter`` application as the MME, against ``s13eir serve``.

OTP's diameter is an independent, strict Diameter stack: it compiles its own S13
dictionary (otp/s13.dia, from TS 29.272), runs CER/CEA, sends the ECRs, decodes
every answer against that dictionary and reports any decode error in
``#diameter_packet.errors``, runs its RFC 3539 watchdog and ends with DPR/DPA.
The escript (otp/otp_mme.escript) prints one parseable line per fact.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EirProcess, start_eir_process, stop_eir_process
from tests.interop.diameter_peer import log_events

OTP_DIR = Path(__file__).parent / "otp"
RUN_TIMEOUT = 50  # seconds, for the whole escript run


def _otp_diameter_available() -> str | None:
    """None when escript and the diameter application are usable, else why not."""
    if shutil.which("escript") is None or shutil.which("erl") is None:
        return "Erlang/OTP (escript, erl) is not installed"
    probe = "case code:lib_dir(diameter) of {error, _} -> halt(1); _ -> halt(0) end."
    try:
        r = subprocess.run(["erl", "-noshell", "-eval", probe], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "erl did not start within 30 s"
    if r.returncode != 0:
        return "the OTP diameter application is not installed (apt: erlang-diameter)"
    return None


@pytest.fixture(scope="module")
def otp() -> None:
    reason = _otp_diameter_available()
    if reason is not None:
        pytest.skip(reason)


@dataclass
class OtpRun:
    stdout: str
    returncode: int

    def lines(self, tag: str) -> list[str]:
        return [line[len(tag) + 1 :] for line in self.stdout.splitlines() if line.startswith(tag + " ")]

    def fields(self, tag: str) -> list[dict[str, str]]:
        return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in self.lines(tag)]

    def answers(self) -> dict[str, dict[str, str]]:
        return {f["label"]: f for f in self.fields("ANSWER")}

    def has(self, line: str) -> bool:
        return line in self.stdout.splitlines()


# (label, IMEI, IMSI or None, Destination-Host or None)
Case = tuple[str, str, str | None, str | None]


def run_otp_mme(tmp_path: Path, port: int, cases: list[Case], watchdog_wait_s: int, mode: str = "callback") -> OtpRun:
    for name in ("otp_mme.escript", "s13.dia"):
        shutil.copy(OTP_DIR / name, tmp_path / name)
    terms = []
    for label, imei, imsi, dest_host in cases:
        args = [json.dumps(label), json.dumps(imei)] + [json.dumps(v) if v else "none" for v in (imsi, dest_host)]
        terms.append("{" + ", ".join(args) + "}.\n")
    (tmp_path / "cases.txt").write_text("".join(terms))
    cmd = ["escript", str(tmp_path / "otp_mme.escript"), str(port), str(tmp_path / "s13.dia"),
           str(tmp_path / "cases.txt"), str(watchdog_wait_s), mode]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"the OTP MME did not finish within {RUN_TIMEOUT} s:\n{out.decode(errors='replace')}")
    text = out.decode(errors="replace")
    (tmp_path / "otp_mme.out").write_text(text)
    return OtpRun(text, proc.returncode)


SESSION_CASES: list[Case] = [
    ("black", "35209900176148", None, None),
    ("grey", "35290611000001", None, None),
    ("white", "35450712345675", None, None),  # on no list: policy whitelisted
    ("exception", "352099001761481", "001010000000001", None),  # blacklisted IMEI, exception pair
    ("bad_imei", "3520990017614A", None, None),  # letters: 5004 INVALID_AVP_VALUE
    ("other_host", "35209900176148", None, "hss.s13eir.test"),  # 3002 with the E-bit
]


@dataclass
class Session:
    run: OtpRun
    eir_log: str


@pytest.fixture(scope="module")
def otp_session(otp: None, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One full OTP session: CER/CEA, the ECRs, a watchdog exchange, DPR/DPA."""
    tmp = tmp_path_factory.mktemp("otp_session")
    # Both sides at Tw = 6 s (the RFC 3539 minimum), so a DWR/DWA happens within ~8 s.
    eir: EirProcess = start_eir_process(tmp, peers={"watchdog_interval_s": 6})
    try:
        run = run_otp_mme(tmp, eir.port, SESSION_CASES, watchdog_wait_s=15)
    finally:
        stop_eir_process(eir)
    return Session(run, eir.log())


def test_otp_session_completes(otp_session: Session) -> None:
    run = otp_session.run
    assert run.returncode == 0, run.stdout
    assert run.has("DONE"), run.stdout
    assert not run.lines("CALL_FAILED"), run.stdout


def test_otp_capabilities_exchange(otp_session: Session) -> None:
    cea = otp_session.run.fields("CEA")
    assert cea == [{"result_code": "2001", "errors": "[]"}], otp_session.run.stdout
    opened = log_events(otp_session.eir_log, "peer_open")
    assert [e["peer"] for e in opened] == ["mme.s13eir.test"], otp_session.eir_log


@pytest.mark.parametrize(
    ("label", "status"),
    [("black", "1"), ("grey", "2"), ("white", "0"), ("exception", "0")],
)
def test_otp_decodes_verdicts(otp_session: Session, label: str, status: str) -> None:
    answer = otp_session.run.answers()[label]
    assert answer["cmd"] == "324"
    assert answer["ebit"] == "false"
    assert answer["rc"] == "2001"
    assert answer["exp"] == "none"
    assert answer["status"] == status
    assert answer["errors"] == "[]", f"OTP decode errors in the ECA: {answer['errors']}"


def test_otp_decodes_invalid_imei_answer(otp_session: Session) -> None:
    answer = otp_session.run.answers()["bad_imei"]
    assert answer["ebit"] == "false"
    assert answer["rc"] == "5004"
    assert answer["status"] == "none"
    assert answer["errors"] == "[]"
    # Failed-AVP carries Terminal-Information (1401/10415) holding the offending IMEI.
    assert answer["failed"] == "[{1401,10415}]"
    assert answer["failed_imei"] == '"3520990017614A"'


def test_otp_gets_protocol_error_answer(otp_session: Session) -> None:
    answer = otp_session.run.answers()["other_host"]
    assert answer["ebit"] == "true"
    assert answer["rc"] == "3002"
    # Whether OTP decodes it cleanly is test_otp_decodes_protocol_error_answer_without_errors.


def test_otp_watchdog_exchange(otp_session: Session) -> None:
    (wd,) = otp_session.run.fields("WATCHDOG")
    counts = {k: int(v) for k, v in wd.items()}
    otp_asked = counts["dwr_sent"] >= 1 and counts["dwa_recv"] >= 1
    eir_asked = counts["dwr_recv"] >= 1 and counts["dwa_sent"] >= 1
    assert otp_asked or eir_asked, f"no DWR/DWA exchange within the wait: {counts}"


def test_otp_disconnect(otp_session: Session) -> None:
    run = otp_session.run
    assert run.has("PEER_DOWN"), run.stdout
    closed = log_events(otp_session.eir_log, "peer_closed")
    assert [e["reason"] for e in closed] == ["DPR received"], otp_session.eir_log
    # OTP decoded the DPA (Disconnect-Peer-Answer) without error.
    assert "cmd=282 request=false ebit=false errors=[]" in run.lines("DECODED"), run.stdout


def test_otp_decoded_every_message(otp_session: Session) -> None:
    """Every message OTP decoded (CEA, ECAs, DWR/DWA, DPA), except the E-bit answer
    covered by its own test, has an empty #diameter_packet.errors."""
    decoded = otp_session.run.fields("DECODED")
    commands = {(d["cmd"], d["request"]) for d in decoded}
    assert {("257", "false"), ("324", "false"), ("282", "false")} <= commands, otp_session.run.stdout
    assert ("280", "true") in commands or ("280", "false") in commands
    assert sum(1 for d in decoded if d["cmd"] == "324") == len(SESSION_CASES)
    bad = [d for d in decoded if d["errors"] != "[]" and d["ebit"] == "false"]
    assert not bad, f"OTP reported decode errors: {bad}"


def test_otp_equipment_unknown(otp: None, tmp_path: Path) -> None:
    """With unknown_imei: unknown, an IMEI on no list is answered with
    Experimental-Result {10415, 5422}; OTP decodes the grouped AVP."""
    eir = start_eir_process(tmp_path, policy={"unknown_imei": "unknown"})
    try:
        run = run_otp_mme(tmp_path, eir.port, [("unknown", "35450712345675", None, None),
                                               ("black", "35209900176148", None, None)], 0)  # fmt: skip
    finally:
        stop_eir_process(eir)
    assert run.returncode == 0, run.stdout
    answers = run.answers()
    assert answers["unknown"]["rc"] == "none"
    assert answers["unknown"]["exp"] == "{10415,5422}"
    assert answers["unknown"]["status"] == "none"
    assert answers["unknown"]["errors"] == "[]"
    assert answers["black"]["status"] == "1"


def test_otp_decodes_protocol_error_answer_without_errors(otp: None, tmp_path: Path) -> None:
    """A 3xxx answer (E-bit) must reach an OTP MME running OTP's defaults.

    OTP decodes an E-bit answer with the RFC 6733 §7.2 answer-message grammar.
    s13eir puts Auth-Session-State (277, M-bit) in its E-bit answers; OTP's default
    strict_mbit flags an M-bit AVP the grammar does not name as 5001, and with the
    default answer_errors (discard) the answer is dropped: diameter:call/4 returns
    {error, failure} instead of the 3002 answer.
    """
    eir = start_eir_process(tmp_path)
    try:
        run = run_otp_mme(tmp_path, eir.port, [("other_host", "35209900176148", None, "hss.s13eir.test")], 0,
                          mode="default")  # fmt: skip
    finally:
        stop_eir_process(eir)
    assert run.returncode == 0, run.stdout
    assert not run.lines("CALL_FAILED"), (
        "OTP (default answer_errors) dropped s13eir's 3002 E-bit answer: "
        + " ".join(run.lines("CALL_FAILED"))
        + " | decode errors: "
        + " ".join(d for d in run.lines("DECODED") if "ebit=true" in d)
    )
    answer = run.answers()["other_host"]
    assert (answer["rc"], answer["ebit"], answer["errors"]) == ("3002", "true", "[]")
