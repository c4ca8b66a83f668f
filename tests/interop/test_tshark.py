"""Wireshark's Diameter dissector as an independent decoder of s13eir's traffic.

A whole session against ``s13eir serve`` is captured on loopback with dumpcap:
s13eir's own client (CER, black/grey/white/exception/unknown checks, an IMEI with
letters, DPR) and a raw python-diameter connection sending requests s13eir must
refuse (unknown M-bit vendor AVP, missing Terminal-Information, P-bit clear,
foreign Destination-Host, unknown command, unknown application) plus a DWR.
tshark then dissects the capture as Diameter (PDML) and the test checks that
every message is decoded, nothing is malformed, no error-severity expert info is
raised on anything s13eir sent, and the answers say what s13eir meant.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from diameter.message import Message
from diameter.message.avp.grouped import VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeRequest,
    DeviceWatchdogRequest,
    DisconnectPeerRequest,
)

from s13eir.client import S13Client
from tests.conftest import MME_HOST, MME_REALM, EirProcess, start_eir_process, stop_eir_process
from tests.interop.diameter_peer import APP_S13, VENDOR_3GPP, DiameterConnection, require_tool, running, wait_for

PI_ERROR = 0x00800000  # Wireshark expert severity "Error"
PI_WARN = 0x00600000  # Wireshark expert severity "Warning"

CLIENT_CHECKS = [
    # IMEI, IMSI, expected (Result-Code, Experimental-Result-Code, Equipment-Status)
    ("35209900176148", None, (2001, None, 1)),  # black
    ("35290611000001", None, (2001, None, 2)),  # grey
    ("86000012000127", None, (2001, None, 0)),  # white list row
    ("352099001761481", "001010000000001", (2001, None, 0)),  # exception pair
    ("35450712345675", None, (None, 5422, None)),  # unknown, with unknown_imei: unknown
    ("3520990017614A", None, (5004, None, None)),  # letters
]


@dataclass
class DiameterPdu:
    frame: int
    cmd: int
    app: int
    request: bool
    error: bool
    hop_by_hop: int
    result_codes: list[int] = field(default_factory=list)
    experimental_result_codes: list[int] = field(default_factory=list)
    equipment_status: list[int] = field(default_factory=list)
    failed_avp: bool = False
    unknown_avps: int = 0
    experts: list[tuple[int, str]] = field(default_factory=list)
    answer_to: int | None = None


@dataclass
class Dissection:
    pdus: list[DiameterPdu]
    malformed_frames: list[int]
    text: str


def _walk(elem: ET.Element) -> Iterator[ET.Element]:
    yield elem
    for child in elem:
        yield from _walk(child)


def _int(value: str | None) -> int:
    assert value is not None
    return int(value, 0)


def dissect(pcap: Path, port: int) -> Dissection:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},diameter", "-T", "pdml"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(out.stdout)
    pdus: list[DiameterPdu] = []
    malformed: list[int] = []
    for packet in root.iter("packet"):
        frame = next(int(f.get("show", "0")) for f in packet.iter("field") if f.get("name") == "frame.number")
        if any(p.get("name") == "_ws.malformed" for p in packet.iter("proto")):
            malformed.append(frame)
        for proto in packet.iter("proto"):
            if proto.get("name") != "diameter":
                continue
            fields = {f.get("name"): f for f in _walk(proto) if f.tag == "field"}
            pdu = DiameterPdu(
                frame=frame,
                cmd=_int(fields["diameter.cmd.code"].get("show")),
                app=_int(fields["diameter.applicationId"].get("show")),
                request=fields["diameter.flags.request"].get("show") in ("1", "True"),
                error=fields["diameter.flags.error"].get("show") in ("1", "True"),
                hop_by_hop=_int(fields["diameter.hopbyhopid"].get("show")),
            )
            for f in _walk(proto):
                name = f.get("name")
                if name == "diameter.Result-Code":
                    pdu.result_codes.append(_int(f.get("show")))
                elif name == "diameter.Experimental-Result-Code":
                    pdu.experimental_result_codes.append(_int(f.get("show")))
                elif name == "diameter.Equipment-Status":
                    pdu.equipment_status.append(_int(f.get("show")))
                elif name == "diameter.Failed-AVP":
                    pdu.failed_avp = True
                elif name == "diameter.avp.unknown":
                    pdu.unknown_avps += 1
                elif name == "diameter.answer_to":
                    pdu.answer_to = _int(f.get("show"))
                elif name == "_ws.expert":
                    sev = next((c.get("show") for c in _walk(f) if c.get("name") == "_ws.expert.severity"), "0")
                    msg = next((c.get("show") for c in _walk(f) if c.get("name") == "_ws.expert.message"), "")
                    pdu.experts.append((_int(sev), msg or ""))
            pdus.append(pdu)
    text = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},diameter", "-V", "-Y", "diameter"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return Dissection(pdus, malformed, text)


def vendor_avp(code: int, vendor: int, data: bytes, mandatory: bool = True) -> bytes:
    flags = 0x80 | (0x40 if mandatory else 0)
    length = 12 + len(data)
    return (
        struct.pack("!IB", code, flags)
        + length.to_bytes(3, "big")
        + struct.pack("!I", vendor)
        + data
        + b"\0" * (-length % 4)
    )


def with_extra_avp(raw: bytes, avp: bytes) -> bytes:
    body = raw + avp
    return body[:1] + len(body).to_bytes(3, "big") + body[4:]


def patch_header(raw: bytes, *, flags: int | None = None, cmd: int | None = None, app: int | None = None) -> bytes:
    b = bytearray(raw)
    if flags is not None:
        b[4] = flags
    if cmd is not None:
        b[5:8] = cmd.to_bytes(3, "big")
    if app is not None:
        b[8:12] = app.to_bytes(4, "big")
    return bytes(b)


# label -> (expected Result-Code, expected E-bit) of the raw requests s13eir must refuse
RAW_EXPECTED = {
    "unknown_mbit_avp": (5001, False),  # AVP 9999/10415 with M set: AVP_UNSUPPORTED + Failed-AVP
    "missing_terminal_information": (5005, False),  # MISSING_AVP + Failed-AVP
    "p_bit_clear": (3008, True),  # INVALID_HDR_BITS
    "foreign_destination_host": (3002, True),  # UNABLE_TO_DELIVER
    "unknown_command": (3001, True),  # COMMAND_UNSUPPORTED (325 in the S13 application)
    "unknown_application": (3007, True),  # APPLICATION_UNSUPPORTED (S6a's id)
}


def raw_cases(conn: DiameterConnection) -> dict[str, bytes]:
    """label -> request bytes, for RAW_EXPECTED."""
    no_ti = conn.ecr("35209900176148")
    no_ti.terminal_information = None
    return {
        "unknown_mbit_avp": with_extra_avp(conn.ecr("35209900176148").as_bytes(),
                                           vendor_avp(9999, VENDOR_3GPP, b"opaque")),
        "missing_terminal_information": no_ti.as_bytes(),
        "p_bit_clear": patch_header(conn.ecr("35209900176148").as_bytes(), flags=0x80),
        "foreign_destination_host": conn.ecr("35209900176148", destination_host="hss.s13eir.test").as_bytes(),
        "unknown_command": patch_header(conn.ecr("35209900176148").as_bytes(), cmd=325),
        "unknown_application": patch_header(conn.ecr("35209900176148").as_bytes(), app=16777251),
    }  # fmt: skip


@dataclass
class Capture:
    port: int
    dissection: Dissection
    client_results: list[tuple[int | None, int | None, int | None, bool]]
    raw_answers: dict[str, bytes]
    raw_hbh: dict[str, int]
    expected_messages: int


async def client_session(port: int) -> list[tuple[int | None, int | None, int | None, bool]]:
    client = S13Client(MME_HOST, MME_REALM)
    await client.connect("127.0.0.1", port)
    results = []
    try:
        for imei, imsi, _ in CLIENT_CHECKS:
            r = await client.check(imei, imsi, "01")
            results.append((r.result_code, r.experimental_result_code, r.equipment_status, r.e_bit))
    finally:
        await client.disconnect()
    return results


def raw_session(port: int) -> tuple[dict[str, bytes], dict[str, int], int]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    with closing(sock):
        conn = DiameterConnection(sock, "mme2.s13eir.test", MME_REALM)
        cer = conn.ident(CapabilitiesExchangeRequest())
        cer.origin_host = conn.origin_host.encode()
        cer.origin_realm = conn.origin_realm.encode()
        cer.host_ip_address = ["127.0.0.1"]
        cer.vendor_id = 0
        cer.product_name = "interop-raw"
        cer.supported_vendor_id = [VENDOR_3GPP]
        cer.vendor_specific_application_id = [
            VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=APP_S13)
        ]
        cea = Message.from_bytes(conn.request(cer))
        assert cea.result_code == 2001
        answers, hbh = {}, {}
        cases = raw_cases(conn)
        for label, raw in cases.items():
            hbh[label] = int.from_bytes(raw[12:16], "big")
            answers[label] = conn.request(raw)
        dwr = conn.ident(DeviceWatchdogRequest())
        dwr.origin_host = conn.origin_host.encode()
        dwr.origin_realm = conn.origin_realm.encode()
        answers["dwr"] = conn.request(dwr)
        dpr = conn.ident(DisconnectPeerRequest())
        dpr.origin_host = conn.origin_host.encode()
        dpr.origin_realm = conn.origin_realm.encode()
        dpr.disconnect_cause = 0
        answers["dpr"] = conn.request(dpr)
    # CER/CEA, the cases, DWR/DWA, DPR/DPA
    return answers, hbh, 2 * (len(cases) + 3)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    dumpcap = require_tool("dumpcap")
    require_tool("tshark")
    tmp = tmp_path_factory.mktemp("tshark")
    eir: EirProcess = start_eir_process(tmp, policy={"unknown_imei": "unknown"})
    pcap = tmp / "s13eir.pcapng"
    log = tmp / "dumpcap.log"
    try:
        with running([dumpcap, "-q", "-i", "lo", "-f", f"tcp port {eir.port}", "-w", str(pcap)], log) as dc:
            started = wait_for(lambda: "Capturing on" in log.read_text(errors="replace") or dc.poll() is not None, 15)
            if dc.poll() is not None or not started:
                pytest.skip(f"dumpcap cannot capture on lo: {log.read_text(errors='replace').strip()}")
            client_results = asyncio.run(client_session(eir.port))
            raw_answers, raw_hbh, raw_count = raw_session(eir.port)
            # dumpcap writes packets as it reads them; give it until the file stops growing.
            last = -1
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pcap.stat().st_size != last:
                last = pcap.stat().st_size
                time.sleep(0.3)
    finally:
        stop_eir_process(eir)
    expected = 2 + 2 * len(CLIENT_CHECKS) + 2 + raw_count
    return Capture(eir.port, dissect(pcap, eir.port), client_results, raw_answers, raw_hbh, expected)


def test_client_verdicts(capture: Capture) -> None:
    got = [(rc, exp, status) for rc, exp, status, _ in capture.client_results]
    assert got == [expected for _, _, expected in CLIENT_CHECKS]


def test_every_message_dissected(capture: Capture) -> None:
    pdus = capture.dissection.pdus
    assert len(pdus) == capture.expected_messages, [(p.frame, p.cmd, p.request) for p in pdus]
    assert {257, 324, 280, 282} <= {p.cmd for p in pdus}
    # Every answer was matched by Wireshark to its request (Hop-by-Hop, End-to-End).
    unmatched = [p for p in pdus if not p.request and p.answer_to is None]
    assert not unmatched, unmatched
    assert sum(p.request for p in pdus) == sum(not p.request for p in pdus)


def test_nothing_malformed(capture: Capture) -> None:
    assert capture.dissection.malformed_frames == [], capture.dissection.text
    assert "Malformed Packet" not in capture.dissection.text


# Warnings Wireshark raises on answers that are nonetheless what RFC 6733 §7.5 asks for:
# the 5001 answer's Failed-AVP echoes the unknown AVP the request carried, and the
# 5005 answer's Failed-AVP holds the missing Terminal-Information with a payload of
# its minimum length, which for a Grouped AVP whose members are all optional is 0.
EXPECTED_WARNINGS = {
    5001: "Unknown AVP 9999 (vendor=3GPP)",
    5005: "Data is empty",
}


def test_no_error_expert_info(capture: Capture) -> None:
    """No expert info of severity Error anywhere in the Diameter traffic."""
    bad = [(p.frame, p.cmd, p.experts) for p in capture.dissection.pdus for sev, _ in p.experts if sev >= PI_ERROR]
    assert not bad, bad


def test_no_unexpected_warnings_on_answers(capture: Capture) -> None:
    """What s13eir sent draws no warning, except the two explained by EXPECTED_WARNINGS."""
    for p in capture.dissection.pdus:
        if p.request:
            continue
        warnings = [msg for sev, msg in p.experts if sev >= PI_WARN]
        allowed = EXPECTED_WARNINGS.get(p.result_codes[0]) if p.result_codes else None
        assert all(allowed and msg.startswith(allowed) for msg in warnings), (p.frame, p.cmd, p.result_codes, warnings)


def test_answers_decoded_by_wireshark(capture: Capture) -> None:
    ecas = [p for p in capture.dissection.pdus if p.cmd == 324 and not p.request and p.app == APP_S13]
    by_order = ecas[: len(CLIENT_CHECKS)]  # the client's ECAs come first, one connection, in order
    for pdu, (imei, _, (rc, exp, status)) in zip(by_order, CLIENT_CHECKS, strict=True):
        assert pdu.result_codes == ([rc] if rc is not None else []), (imei, pdu)
        assert pdu.experimental_result_codes == ([exp] if exp is not None else []), (imei, pdu)
        assert pdu.equipment_status == ([status] if status is not None else []), (imei, pdu)
        assert not pdu.error
    assert by_order[-1].failed_avp, "the 5004 answer carries Failed-AVP"


def test_error_answers(capture: Capture) -> None:
    """The raw malformed requests: python-diameter and Wireshark agree on each answer."""
    by_hbh = {p.hop_by_hop: p for p in capture.dissection.pdus if not p.request}
    for label, (rc, ebit) in RAW_EXPECTED.items():
        raw = capture.raw_answers[label]
        msg = Message.from_bytes(raw)
        assert (msg.result_code, bool(raw[4] & 0x20)) == (rc, ebit), label
        pdu = by_hbh[capture.raw_hbh[label]]
        assert (pdu.result_codes, pdu.error) == ([rc], ebit), (label, pdu)
        if rc in (5001, 5005):
            assert pdu.failed_avp, (label, pdu)
    assert Message.from_bytes(capture.raw_answers["dwr"]).result_code == 2001
    assert Message.from_bytes(capture.raw_answers["dpr"]).result_code == 2001
