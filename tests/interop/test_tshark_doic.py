"""Wireshark's dissector reads s13eir's overload answers: an ECA carrying RFC 7683
OC-Supported-Features and OC-OLR, and a 3004 refusal, built by the sans-IO peer under
overload, written to a capture with text2pcap and dissected by tshark."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.diameter.test_peer_sansio import ecr
from tests.interop.diameter_peer import require_tool
from tests.test_overload import overloaded_peer, with_features


def hexdump(messages: list[bytes]) -> str:
    """text2pcap's input: one offset-prefixed hex dump per packet."""
    out = []
    for msg in messages:
        out += [f"{i:06x} " + " ".join(f"{b:02x}" for b in msg[i : i + 16]) for i in range(0, len(msg), 16)]
        out.append("")
    return "\n".join(out) + "\n"


def test_doic_and_busy_answers_are_dissected(tmp_path: Path) -> None:
    text2pcap, tshark = require_tool("text2pcap"), require_tool("tshark")
    conn, control = overloaded_peer(40)
    request = with_features(ecr(hbh=9))
    conn.receive_data(request, 1.0)
    eca = conn.data_to_send()
    shedding, _ = overloaded_peer(100)
    shedding.receive_data(ecr(hbh=10), 1.0)
    busy = shedding.data_to_send()
    (tmp_path / "in.txt").write_text(hexdump([request, eca, busy]))
    pcap = tmp_path / "doic.pcap"
    subprocess.run([text2pcap, "-q", "-T", "40000,3868", str(tmp_path / "in.txt"), str(pcap)], check=True, timeout=30)
    out = subprocess.run([tshark, "-n", "-r", str(pcap), "-d", "tcp.port==3868,diameter", "-T", "pdml"],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    root = ET.fromstring(out.stdout)
    packets = root.findall("packet")
    assert len(packets) == 3
    assert not any(p.get("name") == "_ws.malformed" for p in root.iter("proto"))
    fields = [{f.get("name"): f.get("show") for f in p.iter("field")} for p in packets]
    answer = fields[1]
    assert answer["diameter.Result-Code"] == "2001"
    assert answer["diameter.OC-Feature-Vector"] == "1"
    assert answer["diameter.OC-Sequence-Number"] == str(control.sequence)
    assert answer["diameter.OC-Reduction-Percentage"] == "40"
    assert answer["diameter.OC-Report-Type"] == "0"
    assert answer["diameter.OC-Validity-Duration"] == "7"
    assert fields[2]["diameter.Result-Code"] == "3004" and fields[2]["diameter.flags.error"] in ("1", "True")
    assert "_ws.expert" not in fields[1] and "_ws.expert" not in fields[2]
