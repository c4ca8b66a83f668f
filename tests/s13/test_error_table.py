"""The S13 error paths as a golden table, run against the sans-IO peer in virtual time.

Each row is a request (bytes built here, deterministic), the RFC 6733 / TS 29.272 rule it
exercises, and what the answer must be: its Result-Code (or Experimental-Result), E-bit,
Failed-AVP and whether the connection closes. The peer is the one a node builds from a
test configuration (``Node(config).settings``, with the sample lists loaded), fed the CER
and the request at fixed times: no socket, no clock. The answer bytes must also equal the
golden copy in ``tests/golden/s13_error_paths.txt``, so that any change to what goes on
the wire shows in review; the expectations of the row are checked independently, with
python-diameter's decoder. ``S13EIR_UPDATE_GOLDEN=1`` rewrites the golden file (then
review its diff). The same cases, end to end over TCP, are still in
``test_error_paths.py``."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from diameter.message import Message

from s13eir.config_loading import config_from_mapping
from s13eir.diameter.framing import FrameBuffer
from s13eir.diameter.peer import PeerConnection, PeerRegistry, PeerState
from s13eir.lists.configured import load_snapshot
from s13eir.node import Node
from tests import mme as M
from tests.conftest import EIR_HOST, EIR_REALM, MME_HOST, MME_REALM, node_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "s13_error_paths.txt"
E_BIT, P_BIT, R_BIT, T_BIT = 0x20, 0x40, 0x80, 0x10


def _ecr_avps(imei: str = M.IMEI_BLACK, name: str = "row") -> list[bytes]:
    return M.raw_ecr_avps(imei, session_id=f"{MME_HOST};golden;{name}", sv="01")


def _ti(*inner: bytes) -> bytes:
    return M.grouped(M.AVP_TERMINAL_INFORMATION, *inner, vendor=M.VENDOR_3GPP)


def _replace_ti(avps: list[bytes], ti: bytes | None) -> list[bytes]:
    out = [a for a in avps if M.avp_code(a) != M.AVP_TERMINAL_INFORMATION]
    return out if ti is None else [*out[:5], ti, *out[5:]]


def _ecr(avps: list[bytes], flags: int = R_BIT | P_BIT, app: int = M.APP_S13, command: int = M.CMD_ECR,
         version: int = 1) -> bytes:  # fmt: skip
    return M.message(flags, command, app, avps, hbh=0x1000, e2e=0x2000, version=version)


def _base(command: int, *avps: bytes, flags: int = R_BIT) -> bytes:
    return M.message(flags, command, 0, avps, hbh=0x1000, e2e=0x2000)


_ORIGIN = (M.utf8(M.AVP_ORIGIN_HOST, MME_HOST), M.utf8(M.AVP_ORIGIN_REALM, MME_REALM))


@dataclass(frozen=True)
class Row:
    rule: str  # where the behaviour is specified
    request: Callable[[], bytes]
    result: int  # Result-Code, or the Experimental-Result-Code
    e_bit: bool = False
    failed: tuple[int, int] | None = None  # the (code, vendor) of the AVP in Failed-AVP
    closes: bool = False
    status: int | None = None  # Equipment-Status of a 2001


ROWS: dict[str, Row] = {
    "blacklisted": Row("TS 29.272 §7.2.20: Equipment-Status of a listed IMEI", lambda: _ecr(_ecr_avps()), 2001,
                       status=1),
    "unlisted": Row("TS 29.272 §7.2.20; policy.unknown_imei whitelisted", lambda: _ecr(_ecr_avps(M.IMEI_UNLISTED)),
                    2001, status=0),
    "unknown-command": Row("RFC 6733 §7.1.3 DIAMETER_COMMAND_UNSUPPORTED", lambda: _ecr(_ecr_avps(), command=999),
                           3001, e_bit=True),
    "destination-host-not-ours": Row(
        "RFC 6733 §6.1.4, §7.1.3 DIAMETER_UNABLE_TO_DELIVER",
        lambda: _ecr([*_ecr_avps(), M.utf8(M.AVP_DESTINATION_HOST, "elsewhere.test")]), 3002, e_bit=True),
    "application-not-s13": Row("RFC 6733 §7.1.3 DIAMETER_APPLICATION_UNSUPPORTED",
                               lambda: _ecr(_ecr_avps(), app=16777251), 3007, e_bit=True),
    "e-bit-in-request": Row("RFC 6733 §3: E-bit set in a request, DIAMETER_INVALID_HDR_BITS",
                            lambda: _ecr(_ecr_avps(), flags=R_BIT | P_BIT | E_BIT), 3008, e_bit=True),
    "ecr-without-p-bit": Row("TS 29.272 §7.2.19: the ECR is proxiable; 3008 DIAMETER_INVALID_HDR_BITS",
                             lambda: _ecr(_ecr_avps(), flags=R_BIT), 3008, e_bit=True),
    "t-bit-accepted": Row("RFC 6733 §3: the T-bit is a retransmission mark, not an error",
                          lambda: _ecr(_ecr_avps(), flags=R_BIT | P_BIT | T_BIT), 2001, status=1),
    "unknown-m-bit-avp": Row("RFC 6733 §7.1.5 DIAMETER_AVP_UNSUPPORTED, the AVP in Failed-AVP",
                             lambda: _ecr([*_ecr_avps(), M.avp(4711, b"x", vendor=99999)]), 5001,
                             failed=(4711, 99999)),
    "unknown-avp-without-m-bit": Row("RFC 6733 §4.1: an AVP without the M-bit may be ignored",
                                     lambda: _ecr([*_ecr_avps(), M.avp(4711, b"x", vendor=99999, flags=0x80)]),
                                     2001, status=1),
    "undefined-enumerated": Row(
        "RFC 6733 §7.1.5 DIAMETER_INVALID_AVP_VALUE: Auth-Session-State 9",
        lambda: _ecr([a if M.avp_code(a) != M.AVP_AUTH_SESSION_STATE else M.u32(M.AVP_AUTH_SESSION_STATE, 9)
                       for a in _ecr_avps()]), 5004, failed=(M.AVP_AUTH_SESSION_STATE, 0)),
    "malformed-imei": Row(
        "TS 29.272 §7.3.4: an IMEI of 12 digits; 5004 with Terminal-Information {IMEI} in Failed-AVP",
        lambda: _ecr(_replace_ti(_ecr_avps(), _ti(M.utf8(M.AVP_IMEI, "352099001761", vendor=M.VENDOR_3GPP)))),
        5004, failed=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)),
    "no-terminal-information": Row("RFC 6733 §7.1.5 DIAMETER_MISSING_AVP: the ECR's mandatory Terminal-Information",
                                   lambda: _ecr(_replace_ti(_ecr_avps(), None)), 5005,
                                   failed=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)),
    "no-imei": Row("TS 29.272 §7.3.3: Terminal-Information without IMEI; 5005 DIAMETER_MISSING_AVP",
                   lambda: _ecr(_replace_ti(_ecr_avps(), _ti(M.utf8(M.AVP_SOFTWARE_VERSION, "01",
                                                                   vendor=M.VENDOR_3GPP)))),
                   5005, failed=(M.AVP_TERMINAL_INFORMATION, M.VENDOR_3GPP)),
    "origin-realm-twice": Row("RFC 6733 §7.1.5 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, the first excess",
                              lambda: _ecr([*_ecr_avps(), M.utf8(M.AVP_ORIGIN_REALM, "again.test")]), 5009,
                              failed=(M.AVP_ORIGIN_REALM, 0)),
    "avp-overruns-message": Row(
        "RFC 6733 §7.1.5 DIAMETER_INVALID_AVP_LENGTH",
        lambda: _ecr([*_ecr_avps(), M.avp(M.AVP_USER_NAME, b"001010000000001", length=8 + 15 + 40)]), 5014,
        failed=(M.AVP_USER_NAME, 0)),
    "version-2": Row("RFC 6733 §7.1.5 DIAMETER_UNSUPPORTED_VERSION, then close",
                     lambda: _ecr(_ecr_avps(), version=2), 5011, closes=True),
    "length-not-multiple-of-4": Row(
        "RFC 6733 §3, §7.1.5 DIAMETER_INVALID_MESSAGE_LENGTH, then close",
        lambda: M.message(R_BIT | P_BIT, M.CMD_ECR, M.APP_S13, _ecr_avps(), hbh=0x1000, e2e=0x2000,
                          length=len(b"".join(_ecr_avps())) + 22), 5015, closes=True),
    "dwr": Row("RFC 6733 §5.5.1: DWR answered with DWA 2001",
               lambda: _base(M.CMD_DWR, *_ORIGIN, M.u32(M.AVP_ORIGIN_STATE_ID, 1)), 2001),
    "dpr": Row("RFC 6733 §5.4: DPR answered with DPA 2001, then the connection closes",
               lambda: _base(M.CMD_DPR, *_ORIGIN, M.u32(273, 0)), 2001, closes=True),
}  # fmt: skip


@pytest.fixture(scope="module")
def node() -> Node:
    """A node built from the test configuration, not started: its peer settings and S13
    application, with the sample lists loaded."""
    n = Node(config_from_mapping(node_config()))
    n.app.lists = load_snapshot(n.config)
    return n


def _answer(node: Node, request: bytes) -> tuple[bytes, PeerConnection]:
    # A registry of its own (each row is a fresh MME connection with the same CER), and a
    # fixed Origin-State-Id (a node takes the time it starts) for the DWA's bytes.
    local = dataclasses.replace(node.settings.local, origin_state_id=7)
    settings = dataclasses.replace(node.settings, registry=PeerRegistry(), local=local)
    conn = PeerConnection(settings, 100.0, random.Random(1), "127.0.0.1")
    conn.receive_data(M.to_bytes(M.cer(hbh=1, e2e=2)), 100.0)
    conn.data_to_send()
    assert conn.state is PeerState.OPEN
    conn.receive_data(request, 101.0)
    return conn.data_to_send(), conn


def _golden() -> dict[str, str]:
    if not GOLDEN.exists():
        return {}
    rows = (line.split(" ", 1) for line in GOLDEN.read_text().splitlines() if line and not line.startswith("#"))
    return {name: hexed for name, hexed in rows}


@pytest.mark.parametrize("name", list(ROWS))
def test_the_answer_is_what_the_rule_says_and_the_golden_bytes(node: Node, name: str) -> None:
    row = ROWS[name]
    request = row.request()
    out, conn = _answer(node, request)
    buf = FrameBuffer()
    buf.feed(out)
    frames = []
    while (f := buf.next_frame()) is not None:
        assert isinstance(f, bytes)
        frames.append(f)
    assert len(frames) == 1, f"{name}: {len(frames)} answers"
    ans = Message.from_bytes(frames[0])  # python-diameter: the independent decoder
    h = ans.header
    assert not h.is_request and h.hop_by_hop_identifier == 0x1000 and h.end_to_end_identifier == 0x2000
    assert h.is_error == row.e_bit, name
    code = getattr(ans, "result_code", None)
    if code is None and getattr(ans, "experimental_result", None) is not None:
        code = ans.experimental_result.experimental_result_code
    assert code == row.result, (name, row.rule)
    assert ans.origin_host == EIR_HOST.encode() and ans.origin_realm == EIR_REALM.encode()
    if row.status is not None:
        assert ans.equipment_status == row.status, name
    raw = M.Answer.parse(frames[0])
    if row.failed is None:
        assert not raw.find(M.AVP_FAILED_AVP), name
    else:
        assert [(a.code, a.vendor) for a in raw.failed_avps] == [row.failed], (name, row.rule)
    assert conn.should_close == row.closes or (row.closes and conn.state is PeerState.CLOSED), name
    if os.environ.get("S13EIR_UPDATE_GOLDEN"):
        return
    golden = _golden()
    assert name in golden, f"no golden answer for {name}: run with S13EIR_UPDATE_GOLDEN=1 and review the diff"
    assert frames[0].hex() == golden[name], f"{name}: the answer on the wire changed ({row.rule})"


def test_the_golden_file_is_written_when_asked(node: Node) -> None:
    """With S13EIR_UPDATE_GOLDEN=1, the table's answers are (re)written; otherwise the file
    holds exactly the table's rows, so that a row removed is removed from it too."""
    if os.environ.get("S13EIR_UPDATE_GOLDEN"):
        lines = ["# name answer-hex: tests/s13/test_error_table.py, regenerated with S13EIR_UPDATE_GOLDEN=1"]
        lines += [f"{name} {_answer(node, row.request())[0].hex()}" for name, row in ROWS.items()]
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("\n".join(lines) + "\n")
    assert set(_golden()) == set(ROWS)
