"""The shipped dictionaries against python-diameter's AVP tables and TS 29.272's command formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from diameter.message.avp.avp import get_avp_dictionary_entry
from diameter.message.commands import MeIdentityCheckAnswer, MeIdentityCheckRequest

from s13eir.diameter import dictionary
from s13eir.diameter.dictionary import DictionaryError, Element, parse_ccf

D = dictionary.load()

# Our types vs python-diameter's codec classes (Enumerated is an Integer32 on the wire).
_TYPES = {
    "UTF8String": {"AvpUtf8String"},
    "OctetString": {"AvpOctetString"},
    "DiameterIdentity": {"AvpOctetString"},
    "DiameterURI": {"AvpOctetString", "AvpUtf8String"},
    "Unsigned32": {"AvpUnsigned32"},
    "Unsigned64": {"AvpUnsigned64"},
    "Enumerated": {"AvpInteger32", "AvpEnumerated"},
    "Grouped": {"AvpGrouped"},
    "Address": {"AvpAddress"},
    "Time": {"AvpTime"},
}
# Where python-diameter's table disagrees with RFC 6733 §4.5, the RFC is the source:
# - M bit "must not" in the RFC, "mandatory" in python-diameter's table;
_M_DISAGREES = {"Product-Name", "Firmware-Revision", "Error-Message", "Error-Reporting-Host"}
# - Unsigned32 in the RFC, Integer32 in python-diameter (same four bytes on the wire);
_TYPE_DISAGREES = {"Result-Code", "Session-Binding", "Authorization-Lifetime", "Inband-Security-Id"}
# - names: python-diameter spells out "Accounting-" where the RFC writes "Acct-".
_ALIASES = {"accounting-multi-session-id": "acct-multi-session-id"}


@pytest.mark.parametrize("avp", sorted(D.by_name.values(), key=lambda a: a.code), ids=lambda a: a.name)
def test_avp_matches_python_diameter(avp: dictionary.AvpDef) -> None:
    entry = get_avp_dictionary_entry(avp.code, avp.vendor)
    assert entry is not None, f"python-diameter does not know {avp.name}"
    theirs = entry["name"].lower()
    assert _ALIASES.get(theirs, theirs) == avp.name.lower()
    if avp.name in _TYPE_DISAGREES:
        assert entry["type"].__name__ == "AvpInteger32" and avp.type == "Unsigned32"
    else:
        assert entry["type"].__name__ in _TYPES[avp.type]
    if avp.name not in _M_DISAGREES and avp.m in ("must", "mustnot"):
        assert bool(entry.get("mandatory", False)) == (avp.m == "must"), avp.name


# TS 29.272 §7.2.19 / §7.2.20 (Rel-19), as printed in the specification.
TS29272_ECR = """
< ME-Identity-Check-Request > ::= < Diameter Header: 324, REQ, PXY, 16777252 >
< Session-Id > [ DRMP ] [ Vendor-Specific-Application-Id ] { Auth-Session-State } { Origin-Host }
{ Origin-Realm } [ Destination-Host ] { Destination-Realm } { Terminal-Information } [ User-Name ]
*[ AVP ] *[ Proxy-Info ] *[ Route-Record ]
"""
TS29272_ECA = """
< ME-Identity-Check-Answer > ::= < Diameter Header: 324, PXY, 16777252 >
< Session-Id > [ DRMP ] [ Vendor-Specific-Application-Id ] [ Result-Code ] [ Experimental-Result ]
{ Auth-Session-State } { Origin-Host } { Origin-Realm } [ Equipment-Status ] *[ AVP ] [ Failed-AVP ]
*[ Proxy-Info ] *[ Route-Record ]
"""


def test_s13_formats_match_ts29272() -> None:
    cmd = D.command(16777252, 324)
    assert cmd is not None
    assert parse_ccf(TS29272_ECR)[1] == cmd.request
    assert parse_ccf(TS29272_ECA)[1] == cmd.answer
    assert cmd.request_flags == {"REQ", "PXY"} and cmd.answer_flags == {"PXY"}
    # User-Name is optional in the spec (some dictionaries wrongly make it required).
    assert cmd.request.element("User-Name") == Element("User-Name", 0, 1)


@pytest.mark.parametrize(("cls", "side"), [(MeIdentityCheckRequest, "request"), (MeIdentityCheckAnswer, "answer")])
def test_s13_formats_match_python_diameter(cls: type, side: str) -> None:
    cmd = D.command(16777252, 324)
    grammar = getattr(cmd, side)
    ours = {(e.name.lower(), e.min >= 1) for e in grammar.elements}
    theirs = set()
    for gen in cls.avp_def:
        name = get_avp_dictionary_entry(gen.avp_code, gen.vendor_id)["name"].lower()
        theirs.add((name, bool(gen.is_required)))
    assert ours == theirs


def test_ccf_qualifiers() -> None:
    _, g = parse_ccf("<X> ::= < Diameter Header: 1, REQ > 1* { Host-IP-Address } 2*3 [ Class ] *[ AVP ]")
    assert g.elements == (Element("Host-IP-Address", 1, 1 << 30), Element("Class", 2, 3))
    assert g.allows_any


def test_operator_vendor_avp_file(tmp_path: Path) -> None:
    extra = tmp_path / "acme.yaml"
    avp = {"code": 9001, "vendor": 99999, "type": "Unsigned32", "m": "must"}
    extra.write_text(yaml.safe_dump({"name": "acme", "avps": {"Acme-Flag": avp}}))
    d = dictionary.load([extra])
    assert d.avps[(9001, 99999)].name == "Acme-Flag"


@pytest.mark.parametrize(
    "bad",
    [
        {"avps": {"X": {"code": 1, "type": "Nope"}}},
        {"avps": {"X": {"code": "one", "type": "Unsigned32"}}},
        {"avps": {"X": {"code": 9002, "type": "Grouped"}}},
        {"avps": {"X": {"code": 9003, "type": "Grouped", "grammar": "X ::= < AVP Header: 9003 > { Nope }"}}},
        {"avps": {"Other-Name": {"code": 263, "type": "UTF8String"}}},
    ],
)
def test_bad_dictionary_is_rejected_with_its_file(tmp_path: Path, bad: dict[str, object]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(DictionaryError, match=r"bad\.yaml"):
        dictionary.load([f])
