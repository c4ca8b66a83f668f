"""Codec properties: raw AVP round trips, and every answer we build decodes in python-diameter."""

from __future__ import annotations

from diameter.message import Message
from diameter.message.commands import MeIdentityCheckAnswer
from hypothesis import given
from hypothesis import strategies as st

from s13eir.decision.model import EquipmentStatus, Reason, Rule, Verdict
from s13eir.decision.policy import Policy
from s13eir.diameter import avp as avpcodec
from s13eir.diameter.avp import AvpLengthError, decode_avps
from s13eir.diameter.capx import LocalIdentity
from s13eir.diameter.header import Header
from s13eir.lists.snapshot import ListSnapshot
from s13eir.s13.application import MeIdentityCheck

avp_strategy = st.tuples(
    st.integers(1, 0xFFFFFFFF),
    st.binary(max_size=40),
    st.one_of(st.none(), st.integers(1, 0xFFFFFFFF)),
    st.integers(0, 0xFF),
)


@given(st.lists(avp_strategy, max_size=12))
def test_avp_round_trip(avps: list[tuple[int, bytes, int | None, int]]) -> None:
    wire = b"".join(avpcodec.encode(c, d, vendor=v, flags=f) for c, d, v, f in avps)
    assert len(wire) % 4 == 0
    got = decode_avps(wire)
    assert [(a.code, a.data, a.vendor or None) for a in got] == [(c, d, v) for c, d, v, _ in avps]
    assert all((a.flags & 0x80) == (0x80 if v else 0) for a, (_, _, v, _) in zip(got, avps, strict=True))
    assert b"".join(avpcodec.pad(a.raw) for a in got) == wire


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_length_errors(data: bytes) -> None:
    try:
        decode_avps(data)
    except AvpLengthError as exc:
        assert decode_avps(exc.failed)  # the Failed-AVP content is itself a well-formed AVP


@given(
    session_id=st.text(min_size=1, max_size=60).filter(lambda s: "\x00" not in s),
    status=st.sampled_from([None, *EquipmentStatus]),
    hbh=st.integers(0, 0xFFFFFFFF),
    e2e=st.integers(0, 0xFFFFFFFF),
    proxies=st.lists(st.tuples(st.text("abc.", min_size=1, max_size=12), st.binary(max_size=9)), max_size=3),
)
def test_eca_decodes_in_python_diameter(
    session_id: str, status: EquipmentStatus | None, hbh: int, e2e: int, proxies: list[tuple[str, bytes]]
) -> None:
    local = LocalIdentity("eir.test", "test", ("127.0.0.1",))
    app = MeIdentityCheck(local, ListSnapshot.empty(), Policy())
    request_avps = [avpcodec.utf8(263, session_id)]
    for host, state in proxies:
        request_avps.append(avpcodec.grouped(284, [avpcodec.utf8(280, host), avpcodec.encode(33, state)]))
    avps = decode_avps(b"".join(request_avps))
    header = Header(1, 0, 0xC0, 324, 16777252, hbh, e2e)
    eca = app.eca.build(header, avps, Verdict(status, Reason(Rule.POLICY, "", "", "")))
    msg = Message.from_bytes(eca)
    assert isinstance(msg, MeIdentityCheckAnswer)
    assert msg.session_id == session_id
    assert (msg.header.hop_by_hop_identifier, msg.header.end_to_end_identifier) == (hbh, e2e)
    assert msg.header.application_id == 16777252 and msg.header.command_flags == 0x40
    assert msg.auth_session_state == 1 and msg.vendor_specific_application_id is None
    if status is None:
        assert msg.result_code is None and msg.equipment_status is None
        assert msg.experimental_result.experimental_result_code == 5422
        assert msg.experimental_result.vendor_id == 10415
    else:
        assert msg.result_code == 2001 and msg.equipment_status == int(status)
    assert [(p.proxy_host, p.proxy_state) for p in msg.proxy_info] == [(h.encode(), s) for h, s in proxies]
    assert msg.header.length == len(eca)
