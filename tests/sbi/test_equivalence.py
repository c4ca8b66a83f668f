"""A phone gets the same verdict over N5g-eir as over S13, for any list contents.

For random lists (IMEIs, TACs, ranges, exception pairs), random policies and random
requests, a real ECR goes through S13's full path (base screening, then
``MeIdentityCheck.handle_request``) and the answer bytes are decoded; the same phone is
asked over N5g-eir (``N5gEir.handle``, the code the HTTP/2 server runs) against the same
snapshot. Status, result and the verdict's reason must agree:

    S13 2001 + Equipment-Status X    <->  200 {"status": X}
    S13 5422 EQUIPMENT_UNKNOWN       <->  404 ERROR_EQUIPMENT_UNKNOWN
    S13 5004 (malformed IMEI, reject) <-> 400 MANDATORY_QUERY_PARAM_INCORRECT

The PEI for an S13 request is the one an AMF would send for the same phone: IMEI (14
digits, plus the Luhn digit) -> imei-<15>; IMEI with 15 digits -> imei-<15>; IMEI +
Software-Version -> imeisv-<16>; a malformed IMEI -> imei-<the same characters>.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from s13eir.decision.imei import luhn_check_digit
from s13eir.decision.model import EquipmentStatus, ListKind, UnknownPolicy, Verdict
from s13eir.decision.policy import MalformedImeiPolicy, Policy
from s13eir.diameter import dictionary
from s13eir.diameter.capx import LocalIdentity, PeerInfo
from s13eir.diameter.header import parse_header
from s13eir.diameter.screening import Rejected, Screening, screen
from s13eir.lists.snapshot import ListSnapshot, SnapshotBuilder
from s13eir.s13.application import MeIdentityCheck, Outcome
from s13eir.s13.eca import AUTH_SESSION_STATE_AVP
from s13eir.sbi.n5g_eir import N5gEir, Request, lists_check
from tests.mme import Answer, raw_ecr, raw_ecr_avps

D = dictionary.load()
LOCAL = LocalIdentity("eir.test", "test", ("127.0.0.1",))
SCREENING = Screening(D, LOCAL.origin_avps, "eir.test", "test", frozenset({16777252}),
                      answer_extras={16777252: AUTH_SESSION_STATE_AVP})  # fmt: skip
PEER = PeerInfo("mme.test", "test", 1, frozenset({16777252}), ("127.0.0.1",))

# Small pools so that requests hit listed IMEIs, TACs, ranges and pairs often.
TACS = ["35209900", "35209901", "86000012"]
IMEIS = [t + s for t in TACS for s in ("000001", "000002", "176148", "999999")]
IMSIS = ["001010000000001", "001010000000002", "00101"]

kinds = st.sampled_from(list(ListKind))


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[ListSnapshot, list[tuple[str, str]]]:
    """A snapshot and its exception pairs (so that phones can be drawn to hit them)."""
    b = SnapshotBuilder()
    pairs: list[tuple[str, str]] = []
    for imei in draw(st.lists(st.sampled_from(IMEIS), max_size=6)):
        b.add_imei(imei, draw(kinds), draw(st.sampled_from(["a.csv", "b.csv"])), draw(st.sampled_from(["", "why"])))
    for tac in draw(st.lists(st.sampled_from(TACS), max_size=2)):
        b.add_tac(tac, draw(kinds), "rules.yaml")
    for _ in range(draw(st.integers(0, 2))):
        first, last = sorted(draw(st.lists(st.sampled_from(IMEIS), min_size=2, max_size=2)))
        b.add_range(first, last, draw(kinds), "rules.yaml", "range")
    for imei in draw(st.lists(st.sampled_from(IMEIS), max_size=3)):
        pairs.append((imei, draw(st.sampled_from(IMSIS))))
        b.add_exception(*pairs[-1], "exceptions.csv")
        b.add_imei(imei, ListKind.BLACK, "stolen.csv")  # CEIRs issue pairs for blocked IMEIs
    return b.build(), pairs


@dataclass(frozen=True)
class Phone:
    imei: str  # as the MME sends it in the IMEI AVP
    sv: str | None  # Software-Version AVP
    user_name: str | None  # User-Name AVP
    pei: str  # what an AMF would send for the same phone
    supi: str | None


@st.composite
def phones(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> Phone:
    pair = draw(st.sampled_from(pairs)) if pairs and draw(st.booleans()) else None
    key = pair[0] if pair else draw(st.one_of(st.sampled_from(IMEIS), st.text("0123456789", min_size=14, max_size=14)))
    form = draw(st.sampled_from(["14", "15", "sv", "malformed"]))
    sv = None
    if form == "14":
        imei, pei = key, f"imei-{key}{luhn_check_digit(key)}"
    elif form == "15":
        imei = key + draw(st.sampled_from("0123456789"))
        pei = f"imei-{imei}"
    elif form == "sv":
        imei, sv = key, draw(st.text("0123456789", min_size=2, max_size=2))
        pei = f"imeisv-{key}{sv}"
    else:
        imei = draw(st.sampled_from([key[:13], key + "01", key[:13] + "X", "", key[:7] + "٣" + key[8:]]))
        pei = f"imei-{imei}"
    user = (
        pair[1]
        if pair and draw(st.booleans())
        else draw(st.one_of(st.none(), st.sampled_from([*IMSIS, "00101abc", "1234"])))
    )
    # User-Name carries the IMSI; the SUPI carries it as imsi-<digits> (S13 ignores a
    # User-Name that is not 5-15 digits, N5g-eir an imsi- SUPI that is not).
    supi = None if user is None else draw(st.sampled_from([f"imsi-{user}", f"nai-{user}@realm"]))
    if supi is not None and supi.startswith("nai-"):
        user = f"{user}@realm"  # the same non-IMSI identity on S13
    return Phone(imei, sv, user, pei, supi)


def s13_verdict(snapshot: ListSnapshot, policy: Policy, phone: Phone) -> tuple[int, int | None, Verdict | None]:
    outcomes: list[Outcome] = []
    app = MeIdentityCheck(LOCAL, snapshot, policy, on_outcome=lambda o, p: outcomes.append(o))
    frame = raw_ecr(raw_ecr_avps(phone.imei, imsi=phone.user_name, sv=phone.sv))
    header = parse_header(frame)
    screened = screen(header, frame, SCREENING)
    assert not isinstance(screened, Rejected), screened
    answer = Answer.parse(app.handle_request(header, frame, screened[1], PEER))
    code = answer.result_code if answer.result_code is not None else answer.experimental_result[1]  # type: ignore[index]
    return code, answer.equipment_status, outcomes[0].verdict


@given(snapshots(), st.data(), st.sampled_from(list(UnknownPolicy)), st.sampled_from(list(MalformedImeiPolicy)))
def test_n5g_eir_and_s13_agree(
    lists: tuple[ListSnapshot, list[tuple[str, str]]], data: st.DataObject, unknown: UnknownPolicy,
    malformed: MalformedImeiPolicy,
) -> None:  # fmt: skip
    snapshot, pairs = lists
    batch = data.draw(st.lists(phones(pairs), min_size=1, max_size=8))
    s13_policy = Policy(unknown_imei=unknown, malformed_imei=malformed)
    n5g = N5gEir(lists_check(lambda: snapshot, lambda: s13_policy), s13_policy)
    for phone in batch:
        code, equipment_status, s13 = s13_verdict(snapshot, s13_policy, phone)
        query = f"pei={phone.pei}" + (f"&supi={phone.supi}" if phone.supi else "")
        answer = n5g.handle(Request("GET", f"/n5g-eir-eic/v1/equipment-status?{query}"), 0.0)
        sbi = answer.outcome.verdict
        if code == 2001:
            assert answer.status == 200, (phone, answer)
            assert answer.body == f'{{"status":"{EquipmentStatus(equipment_status).name}"}}'.encode()
        elif code == 5422:
            assert (answer.status, answer.outcome.cause) == (404, "ERROR_EQUIPMENT_UNKNOWN"), (phone, answer)
        else:
            assert code == 5004, code
            assert (answer.status, answer.outcome.cause) == (400, "MANDATORY_QUERY_PARAM_INCORRECT"), (phone, answer)
            continue
        assert s13 is not None and sbi is not None
        assert sbi.status == s13.status
        # Same rule, list, source and entry; a malformed IMEI's entry is the value as
        # received, which is the PEI on N5g-eir.
        entry = s13.reason.entry if s13.reason.rule.value != "malformed" else f"imei-{s13.reason.entry}"
        assert (sbi.reason.rule, sbi.reason.list, sbi.reason.source, sbi.reason.entry, sbi.reason.detail) == (
            s13.reason.rule, s13.reason.list, s13.reason.source, entry, s13.reason.detail)  # fmt: skip
