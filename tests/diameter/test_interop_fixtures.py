"""Sessions of independent Diameter peers with s13eir, captured over TCP
(``tests/interop/capture.py``) and replayed against the sans-IO peer in virtual time:

* an Erlang/OTP ``diameter`` MME (its CER, ECRs, DWA and DPR);
* freeDiameterd as a relay agent in front of s13eir (its CER advertising the relay
  application, the ECRs it relays with its Route-Record, its DPR);
* the raw python-diameter session whose capture tshark dissects (protocol errors: an
  unknown M-bit AVP, no Terminal-Information, the P-bit clear, another Destination-Host,
  an unknown command and application; a DWR, a DPR).

Their encoding stays covered on a machine without Erlang or freeDiameter. The answers
must be what the live node answered then, byte for byte (the CEA, which carries the
host's addresses and the node's start time, by its fields)."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from diameter.message import Message

from s13eir.config_loading import config_from_mapping
from s13eir.diameter.framing import FrameBuffer
from s13eir.diameter.header import parse_header
from s13eir.diameter.peer import PeerConnection, PeerRegistry, PeerState
from s13eir.lists.configured import load_snapshot
from s13eir.node import Node
from tests.conftest import EIR_HOST, node_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SESSIONS = {name: json.loads((FIXTURES / f"{name}_session.json").read_text())
            for name in ("otp", "freediameter", "tshark")}  # fmt: skip
VERDICTS = {"black": (2001, 1), "grey": (2001, 2), "white": (2001, 0), "exception": (2001, 0),
            "bad_imei": (5004, None), "other_host": (3002, None), "p_bit": (3008, None)}  # fmt: skip
CER, ECR, DWR, DPR = 257, 324, 280, 282


def _frames(data: bytes) -> list[bytes]:
    buf = FrameBuffer()
    buf.feed(data)
    out = []
    while (f := buf.next_frame()) is not None:
        assert isinstance(f, bytes), f
        out.append(f)
    return out


@pytest.fixture(scope="module", params=sorted(SESSIONS))
def session(request: pytest.FixtureRequest) -> dict[str, Any]:
    return SESSIONS[request.param]


@functools.cache
def _replay(name: str) -> list[tuple[bytes, bytes]]:
    """(request from the peer, the replayed peer's answer), in the session's order."""
    session = SESSIONS[name]
    node = Node(config_from_mapping(node_config(**session.get("config", {"peers": session.get("peers")}))))
    node.app.lists = load_snapshot(node.config)
    settings = dataclasses.replace(node.settings, registry=PeerRegistry())
    conn = PeerConnection(settings, 0.0, random.Random(1), "127.0.0.1")
    out = []
    for i, hexed in enumerate(session["mme"]):
        frame = bytes.fromhex(hexed)
        if not frame[4] & 0x80:  # the peer's DWA to the live node's DWR: a replay sends none
            continue
        conn.receive_data(frame, 1.0 + i)
        (answer,) = _frames(conn.data_to_send())
        out.append((frame, answer))
    assert conn.should_close or conn.state is PeerState.CLOSED  # after the DPA
    return out


@pytest.fixture(scope="module")
def replay(session: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return _replay(next(name for name, s in SESSIONS.items() if s is session))


def test_the_fixture_is_a_whole_session(session: dict[str, Any]) -> None:
    peer = [parse_header(bytes.fromhex(f)) for f in session["mme"]]
    requests = [(h.command_code, h.is_request) for h in peer if h.is_request]
    assert requests[0] == (CER, True) and requests[-1] == (DPR, True)
    assert all(Message.from_bytes(bytes.fromhex(f)) for f in session["mme"])  # python-diameter reads it too
    if session.get("raw"):  # the protocol-error session: one request per case, after the CER
        assert len(requests) == 1 + len(session["cases"])
        return
    ecrs = [(ECR, True)] * len(session["cases"])
    base = [(h.command_code, h.is_request) for h in peer if h.command_code != ECR]
    assert [(h.command_code, h.is_request) for h in peer if h.command_code == ECR] == ecrs
    assert set(base[1:-1]) <= {(DWR, True), (DWR, False)}  # watchdogs, either way


def test_requests_are_answered_as_the_live_node_answered(
    session: dict[str, Any], replay: list[tuple[bytes, bytes]]
) -> None:
    live = [bytes.fromhex(f) for f in session["eir"] if bytes.fromhex(f)[4] & 0x80 == 0]  # answers only
    assert len(live) == len(replay)
    for (request, ours), theirs in zip(replay, live, strict=True):
        code = parse_header(request).command_code
        if code == CER:
            a, b = Message.from_bytes(ours), Message.from_bytes(theirs)
            assert a.result_code == b.result_code == 2001
            assert a.origin_host == b.origin_host == EIR_HOST.encode()
            assert a.vendor_specific_application_id[0].auth_application_id == 16777252
        elif code == DWR:  # its Origin-State-Id is the live node's start
            a, b = Message.from_bytes(ours), Message.from_bytes(theirs)
            assert (a.result_code, a.origin_host) == (b.result_code, b.origin_host)
        else:
            assert ours == theirs, f"command {code}: the replay answers otherwise than the live node did"


@pytest.mark.parametrize("name", [n for n, s in sorted(SESSIONS.items()) if not s.get("raw")])
def test_each_ecr_gets_the_case_verdict(name: str) -> None:
    """The ECR sessions' answers, by their cases (the raw protocol-error session is compared
    by bytes above; the rules its answers follow are the golden table's)."""
    session, replay = SESSIONS[name], _replay(name)
    ecas = [answer for request, answer in replay if parse_header(request).command_code == ECR]
    assert len(ecas) == len(session["cases"])
    for case, raw in zip(session["cases"], ecas, strict=True):
        label = case[0]
        ans = Message.from_bytes(raw)
        want = VERDICTS[label]
        assert (ans.result_code, getattr(ans, "equipment_status", None)) == want, label
        assert ans.header.is_error == (want[0] in (3002, 3008)), label
