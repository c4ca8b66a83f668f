"""freeDiameter (freeDiameterd 1.2.x) as a peer of ``s13eir serve``.

freeDiameterd has no S13 client: the Debian freediameter-extensions package ships
no test_app and no dbg_interactive, and no extension registers S13 (16777252), so
freeDiameterd cannot originate an ECR. What it can do:

* connect to s13eir as the MME's Diameter stack: CER/CEA, DWR/DWA, DPR/DPA. With
  no local application it advertises the Relay application (0xffffffff) unless
  ``NoRelay;`` is set; s13eir accepts a relay, and answers 5010
  NO_COMMON_APPLICATION to a peer that advertises neither S13 nor relay;
* act as a Diameter relay agent (DRA) between an MME and s13eir: the test's own
  MME (python-diameter) sends ECRs to freeDiameterd, which routes them to s13eir
  by Destination-Realm / Destination-Host and relays the ECAs back.

freeDiameterd never listens here (``Port = 0; SecPort = 0;``: it ignores a loopback
``ListenOn`` and would otherwise bind every address); it connects out to 127.0.0.1
only. ``dbg_msg_dumps`` writes every message it sends or receives, decoded with its
dictionary (base + dict_dcca_3gpp, which has the S13 AVPs), and every parsing or
routing error, to its log, which the tests read.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EirProcess, start_eir_process, stop_eir_process
from tests.interop.diameter_peer import (
    DiameterConnection,
    Eca,
    accept_one,
    log_events,
    require_tool,
    running,
    wait_for,
)

EXT_DIR = Path("/usr/lib/freeDiameter")
DICTS = ["dict_nasreq.fdx", "dict_dcca.fdx", "dict_dcca_3gpp.fdx"]  # dict_dcca_3gpp depends on the other two
DUMPS = "dbg_msg_dumps.fdx"
# dbg_msg_dumps flags: errors as trees (0x0008), send/receive as trees (0x0080),
# routing decisions compact (0x0200), peer events compact (0x2000).
DUMP_FLAGS = "0x2288"


def _extension(name: str) -> str:
    path = EXT_DIR / name
    if not path.exists():
        pytest.skip(f"freeDiameter extension {name} is missing (apt: freediameter-extensions)")
    return str(path)


@pytest.fixture(scope="module")
def freediameterd() -> str:
    exe = require_tool("freeDiameterd")
    for name in [*DICTS, DUMPS]:
        _extension(name)
    return exe


def fd_config(identity: str, peers: dict[str, int], *, no_relay: bool = False, tw: int = 6) -> str:
    lines = [
        f'Identity = "{identity}";',
        'Realm = "s13eir.test";',
        "Port = 0;",  # no listening socket at all
        "SecPort = 0;",
        "No_SCTP;",
        f"TwTimer = {tw};",
        "TcTimer = 6;",
        *(["NoRelay;"] if no_relay else []),
        *[f'LoadExtension = "{_extension(d)}";' for d in DICTS],
        f'LoadExtension = "{_extension(DUMPS)}" : "{DUMP_FLAGS}";',
    ]
    for host, port in peers.items():
        lines.append(f'ConnectPeer = "{host}" {{ ConnectTo = "127.0.0.1"; Port = {port}; No_TLS; No_SCTP; }};')
    return "\n".join(lines) + "\n"


@dataclass
class FdLog:
    path: Path

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.text(), re.MULTILINE) is not None

    def messages(self) -> list[tuple[str, str, str]]:
        """(direction SND|RCV, peer, command name) of every dumped message, in order."""
        out = re.findall(r"NOTI   (SND|RCV) (?:to|from) '([^']+)':\n[^\n]*NOTI\s+('[^']+'|\(not found in dictionary\))",
                         self.text())  # fmt: skip
        return [(d, p, name.strip("'")) for d, p, name in out]

    def errors(self) -> list[str]:
        """ERROR/FATAL lines, except the FATAL that announces every (SIGTERM) shutdown."""
        return [
            line
            for line in self.text().splitlines()
            if re.search(r"\b(ERROR|FATAL)\b", line) and "Initiating freeDiameter shutdown sequence" not in line
        ]


def state_open(peer: str) -> str:
    return rf"'STATE_WAITCEA'\s+-> 'STATE_OPEN'\s+'{re.escape(peer)}'"


@pytest.fixture
def eir(tmp_path: Path) -> Iterator[EirProcess]:
    p = start_eir_process(tmp_path)
    try:
        yield p
    finally:
        stop_eir_process(p)


def test_freediameter_peer_lifecycle(freediameterd: str, eir: EirProcess, tmp_path: Path) -> None:
    """freeDiameterd as the MME's stack: CER/CEA to OPEN, a DWR/DWA at Tw = 6 s,
    DPR/DPA when freeDiameterd is stopped; s13eir's CEA, DWA and DPA decode cleanly."""
    conf = tmp_path / "fd.conf"
    conf.write_text(fd_config("mme.s13eir.test", {"eir.s13eir.test": eir.port}))
    log = FdLog(tmp_path / "fd.log")
    with running([freediameterd, "-c", str(conf), "-dd"], log.path) as fd:
        assert wait_for(lambda: log.has(state_open("eir.s13eir.test")) or fd.poll() is not None, 15), log.text()
        assert fd.poll() is None, log.text()
        # TwTimer = 6: freeDiameter's first DWR comes 4-8 s after the last message.
        assert wait_for(lambda: ("RCV", "eir.s13eir.test", "Device-Watchdog-Answer") in log.messages(), 20), log.text()
        fd.send_signal(signal.SIGTERM)
        fd.wait(25)
    text = log.text()
    msgs = log.messages()
    expected = [
        ("SND", "eir.s13eir.test", "Capabilities-Exchange-Request"),
        ("RCV", "eir.s13eir.test", "Capabilities-Exchange-Answer"),
        ("SND", "eir.s13eir.test", "Device-Watchdog-Request"),
        ("RCV", "eir.s13eir.test", "Device-Watchdog-Answer"),
        ("SND", "eir.s13eir.test", "Disconnect-Peer-Request"),
        ("RCV", "eir.s13eir.test", "Disconnect-Peer-Answer"),
    ]
    assert [m for m in msgs if m in expected] == expected, msgs
    # freeDiameter advertised the relay application and s13eir accepted it.
    assert re.search(r"'Auth-Application-Id'\(258\) l=12 f=-M val=4294967295", text), text
    assert "'Result-Code'(268) l=12 f=-M val='DIAMETER_SUCCESS' (2001" in text
    assert re.search(r"'STATE_CLOSING'\s+-> 'STATE_CLOSED'\s+'eir.s13eir.test'", text), text
    assert log.errors() == [], log.errors()
    eir_log = eir.log()
    assert [e["peer"] for e in log_events(eir_log, "peer_open")] == ["mme.s13eir.test"], eir_log
    assert [e["reason"] for e in log_events(eir_log, "peer_closed")] == ["DPR received"], eir_log


def test_freediameter_no_relay_no_common_application(freediameterd: str, eir: EirProcess, tmp_path: Path) -> None:
    """With NoRelay and no application, freeDiameterd advertises nothing s13eir serves:
    s13eir answers the CER with 5010 and closes; freeDiameter decodes the CEA."""
    conf = tmp_path / "fd.conf"
    conf.write_text(fd_config("mme.s13eir.test", {"eir.s13eir.test": eir.port}, no_relay=True))
    log = FdLog(tmp_path / "fd.log")
    with running([freediameterd, "-c", str(conf), "-dd"], log.path):
        assert wait_for(lambda: log.has(r"CONNECT FAILED to eir\.s13eir\.test"), 15), log.text()
    text = log.text()
    assert "Auth-Application-Id" not in text.split("RCV from")[0], "NoRelay still advertised an application"
    assert "val='DIAMETER_NO_COMMON_APPLICATION' (5010" in text, text
    rejected = log_events(eir.log(), "peer_rejected")
    assert rejected and rejected[0]["result_code"] == 5010, eir.log()


RELAY_CASES = [
    # label, IMEI, IMSI, Destination-Host, expected (Result-Code, Equipment-Status)
    ("black", "35209900176148", None, None, (2001, 1)),
    ("grey", "35290611000001", None, None, (2001, 2)),
    ("white", "35450712345675", None, "eir.s13eir.test", (2001, 0)),  # routed by Destination-Host
    ("exception", "352099001761481", "001010000000001", None, (2001, 0)),
    ("bad_imei", "3520990017614A", None, None, (5004, None)),
]


DRA_PEERS = {"list": [{"origin_host": "dra.s13eir.test", "origin_realm": "s13eir.test"}]}


@dataclass
class RelayRun:
    answers: dict[str, Eca]
    log: FdLog
    dpr_answered: int


def relay_session(freediameterd: str, tmp_path: Path, eir_port: int) -> RelayRun:
    """The MME side of the relay session: freeDiameterd (dra.s13eir.test) connects to
    s13eir at ``eir_port`` and to this MME; the MME sends RELAY_CASES and an ECR with the
    P-bit clear through it, then stops freeDiameterd and answers its DPR."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        mme_port = listener.getsockname()[1]
        conf = tmp_path / "fd.conf"
        conf.write_text(fd_config("dra.s13eir.test", {"eir.s13eir.test": eir_port, "mme.s13eir.test": mme_port}))
        log = FdLog(tmp_path / "fd.log")
        with running([freediameterd, "-c", str(conf), "-dd"], log.path) as fd:
            with closing(accept_one(listener, 15)) as sock:
                mme = DiameterConnection(sock, "mme.s13eir.test", "s13eir.test")
                cer = mme.answer_cer(mme.next_frame(time.monotonic() + 10))
                assert cer.origin_host == b"dra.s13eir.test"
                # Requests can only be routed once freeDiameterd's connection to s13eir is open.
                assert wait_for(lambda: log.has(state_open("eir.s13eir.test")), 15), log.text()
                assert wait_for(lambda: log.has(state_open("mme.s13eir.test")), 15), log.text()
                answers: dict[str, Eca] = {}
                for label, imei, imsi, dest_host, _ in RELAY_CASES:
                    answers[label] = Eca.decode(mme.request(mme.ecr(imei, imsi, destination_host=dest_host)))
                # A request s13eir refuses at the header: P-bit clear, 3008 with the E-bit.
                bad_bits = mme.ecr("35209900176148")
                bad_bits.header.is_proxyable = False
                answers["p_bit"] = Eca.decode(mme.request(bad_bits))
                # Stop the relay; it sends DPR to both sides, this MME answers its DPR.
                fd.send_signal(signal.SIGTERM)
                mme.serve_base(lambda: mme.dpr_answered > 0, timeout=15)
            fd.wait(25)
    finally:
        listener.close()
    return RelayRun(answers, log, mme.dpr_answered)


def test_freediameter_relays_ecr(freediameterd: str, tmp_path: Path) -> None:
    """MME (python-diameter) -> freeDiameterd relay (dra.s13eir.test) -> s13eir.

    freeDiameterd connects to both; the MME side is a listening socket of this test.
    s13eir must accept the relay as its peer, answer ECRs whose Origin-Host is not
    the peer's, carry Route-Record, and its ECAs must survive freeDiameter's relaying.
    """
    eir = start_eir_process(tmp_path, peers=DRA_PEERS)
    try:
        run = relay_session(freediameterd, tmp_path, eir.port)
    finally:
        stop_eir_process(eir)
    answers, log = run.answers, run.log

    for label, _, _, _, (rc, status) in RELAY_CASES:
        a = answers[label]
        assert (a.result_code, a.equipment_status, a.e_bit) == (rc, status, False), (label, a)
    assert answers["bad_imei"].failed_avp_codes == ((1401, 10415),)
    assert (answers["p_bit"].result_code, answers["p_bit"].e_bit) == (3008, True)

    text = log.text()
    # freeDiameterd forwarded every ECR and every ECA: no parsing or routing error, nothing dropped.
    forwarded_ecr = re.findall(r"FORWARDING: [^\n]*?16777252/324 f:R[P-]-- src:'mme.s13eir.test'", text)
    forwarded_eca = re.findall(r"FORWARDING: [^\n]*?16777252/324 f:-[P-][E-]- src:'eir.s13eir.test'", text)
    assert (len(forwarded_ecr), len(forwarded_eca)) == (len(answers), len(answers)), text
    for bad in ("DROPPED", "PARSING ERROR", "ROUTING ERROR", "Unable to forward", "failed the dictionary"):
        assert bad.lower() not in text.lower(), bad
    # The only errors: freeDiameter has no command model for 324 in its dictionaries
    # (dict_dcca_3gpp defines the S13 AVPs, not the command), logged once per S13 message;
    # it then relays the message without parsing its AVPs.
    no_model = "fd_dict_search ( dict, DICT_COMMAND"
    assert [e for e in log.errors() if no_model not in e] == [], log.errors()
    assert sum(no_model in e for e in log.errors()) == 2 * len(answers)
    assert run.dpr_answered == 1

    eir_log = eir.log()
    assert [e["peer"] for e in log_events(eir_log, "peer_open")] == ["dra.s13eir.test"], eir_log
    verdicts = log_events(eir_log, "verdict")
    assert {v["peer"] for v in verdicts} == {"dra.s13eir.test"}
    assert {str(v["session_id"]).split(";")[0] for v in verdicts} == {"mme.s13eir.test"}
    assert [e["reason"] for e in log_events(eir_log, "peer_closed")] == ["DPR received"], eir_log
