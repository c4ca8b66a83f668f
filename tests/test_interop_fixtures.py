"""An Erlang/OTP ``diameter`` MME's session, captured over TCP (``tests/interop/capture.py``)
and replayed against the sans-IO peer in virtual time: OTP's encoding of the CER, the
ECRs, its DWA and the DPR stays covered on a machine without Erlang. The answers must be
what the live node answered then, byte for byte (the CEA, which carries the host's
addresses and the node's start time, by its fields)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from diameter.message import Message

from s13eir.config_loading import config_from_mapping
from s13eir.diameter.framing import FrameBuffer
from s13eir.diameter.header import parse_header
from s13eir.diameter.peer import PeerConnection, PeerRegistry, PeerState
from s13eir.lists.configured import load_snapshot
from s13eir.node import Node

from .conftest import EIR_HOST, node_config

FIXTURE = Path(__file__).parent / "fixtures" / "otp_session.json"
SESSION = json.loads(FIXTURE.read_text())
CER, ECR, DWR, DPR = 257, 324, 280, 282


def _frames(data: bytes) -> list[bytes]:
    buf = FrameBuffer()
    buf.feed(data)
    out = []
    while (f := buf.next_frame()) is not None:
        assert isinstance(f, bytes), f
        out.append(f)
    return out


@pytest.fixture(scope="module")
def replay() -> list[tuple[bytes, bytes]]:
    """(request from the OTP MME, the replayed peer's answer), in the session's order."""
    node = Node(config_from_mapping(node_config(peers={"watchdog_interval_s": 6})))
    node.app.lists = load_snapshot(node.config)
    settings = dataclasses.replace(node.settings, registry=PeerRegistry())
    conn = PeerConnection(settings, 0.0, random.Random(1), "127.0.0.1")
    out = []
    for i, hexed in enumerate(SESSION["mme"]):
        frame = bytes.fromhex(hexed)
        if not frame[4] & 0x80:  # OTP's DWA to the live node's DWR: a replay sends none
            continue
        conn.receive_data(frame, 1.0 + i)
        (answer,) = _frames(conn.data_to_send())
        out.append((frame, answer))
    assert conn.should_close or conn.state is PeerState.CLOSED  # after the DPA
    return out


def test_the_fixture_is_a_whole_session() -> None:
    mme = [parse_header(bytes.fromhex(f)) for f in SESSION["mme"]]
    assert [(h.command_code, h.is_request) for h in mme] == [
        (CER, True), *[(ECR, True)] * len(SESSION["cases"]), (DWR, False), (DPR, True)]  # fmt: skip
    assert all(Message.from_bytes(bytes.fromhex(f)) for f in SESSION["mme"])  # python-diameter reads OTP too


def test_otp_requests_are_answered_as_the_live_node_answered(replay: list[tuple[bytes, bytes]]) -> None:
    live = [bytes.fromhex(f) for f in SESSION["eir"] if bytes.fromhex(f)[4] & 0x80 == 0]  # answers only
    assert len(live) == len(replay)
    for (request, ours), theirs in zip(replay, live, strict=True):
        code = parse_header(request).command_code
        if code == CER:
            a, b = Message.from_bytes(ours), Message.from_bytes(theirs)
            assert a.result_code == b.result_code == 2001
            assert a.origin_host == b.origin_host == EIR_HOST.encode()
            assert a.vendor_specific_application_id[0].auth_application_id == 16777252
        else:
            assert ours == theirs, f"command {code}: the replay answers otherwise than the live node did"


@pytest.mark.parametrize("index", range(len(SESSION["cases"])))
def test_each_otp_ecr_gets_the_case_verdict(replay: list[tuple[bytes, bytes]], index: int) -> None:
    label = SESSION["cases"][index][0]
    ans = Message.from_bytes(replay[1 + index][1])
    want = {"black": (2001, 1), "grey": (2001, 2), "white": (2001, 0), "exception": (2001, 0),
            "bad_imei": (5004, None), "other_host": (3002, None)}[label]  # fmt: skip
    assert (ans.result_code, getattr(ans, "equipment_status", None)) == want, label
    assert ans.header.is_error == (want[0] == 3002)
