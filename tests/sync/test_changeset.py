"""The MQTT change-set schema (s13eir.sync.changeset): what is accepted, what is refused and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s13eir.lists.redis_layout import LISTS, Change, Op
from s13eir.sync.changeset import ChangeSet, ChangeSetError, encode_changeset, parse_changeset

FEED = "ceir"
IMEI = "35209900176148"
IMSI = "001010123456789"

EXAMPLE = {
    "seq": 42,
    "changes": [
        {"op": "add", "list": "black", "imei": IMEI, "reason": "stolen"},
        {"op": "remove", "list": "grey", "imei": "35209900176149"},
        {"op": "add", "list": "exceptions", "imei": IMEI, "imsi": IMSI},
    ],
}


def _parse(msg: Any) -> ChangeSet:
    return parse_changeset(json.dumps(msg).encode(), feed=FEED)


def test_the_documented_example_is_accepted() -> None:
    cs = _parse(EXAMPLE)
    assert cs.seq == 42
    assert cs.changes == (
        Change("add", "black", IMEI, "", "stolen", FEED),
        Change("remove", "grey", "35209900176149", "", "", ""),  # whatever its source
        Change("add", "exceptions", IMEI, IMSI, "", FEED),
    )
    assert cs.sent_at is None


def test_optional_fields_and_normalisation() -> None:
    msg = {
        "seq": 1,
        "feed": FEED,
        "sent_at": "2024-05-01T12:00:00Z",
        "changes": [
            {"op": "add", "list": "white", "imei": "352099001761481", "source": "type-approval"},  # 15 digits
            {"op": "add", "list": "black", "imei": " 3520990017614801 "},  # IMEISV, blanks
        ],
    }
    cs = _parse(msg)
    assert cs.sent_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert [c.imei for c in cs.changes] == [IMEI, IMEI]
    assert cs.changes[0].source == "type-approval"
    assert cs.changes[1].source == FEED


def test_removal_sources() -> None:
    cs = _parse(
        {
            "seq": 3,
            "changes": [
                {"op": "remove", "list": "black", "imei": IMEI},
                {"op": "remove", "list": "black", "imei": IMEI, "source": FEED, "reason": "stolen"},
            ],
        }
    )
    assert [(c.source, c.reason) for c in cs.changes] == [("", ""), (FEED, "stolen")]


def test_an_empty_change_set_only_advances_seq() -> None:
    assert _parse({"seq": 7, "changes": []}) == ChangeSet(7, ())


def _with_change(**fields: Any) -> dict[str, Any]:
    change = {"op": "add", "list": "black", "imei": IMEI}
    change.update(fields)
    return {"seq": 5, "changes": [{"op": "add", "list": "grey", "imei": IMEI}, change]}


def _without(key: str) -> dict[str, Any]:
    msg = dict(EXAMPLE)
    del msg[key]
    return msg


REJECTED: list[tuple[str, bytes | Any, str]] = [
    ("bad JSON", b'{"seq": 1, "changes": [', "not JSON"),
    ("not UTF-8 JSON", b"\xff\xfe", "not JSON"),
    ("an array", [EXAMPLE], "Expected object, got array"),
    ("missing seq", _without("seq"), "missing required field seq"),
    ("missing changes", _without("changes"), "missing required field changes"),
    ("seq 0", {"seq": 0, "changes": []}, "seq: Expected int >= 1"),
    ("negative seq", {"seq": -3, "changes": []}, "seq: Expected int >= 1"),
    ("seq as a string", {"seq": "42", "changes": []}, "seq: Expected int, got str"),
    ("seq as a bool", {"seq": True, "changes": []}, "seq: Expected int, got bool"),
    ("seq as a float", {"seq": 4.5, "changes": []}, "seq: Expected int, got float"),
    ("seq beyond a Redis integer", {"seq": 2**63, "changes": []}, "seq"),
    ("changes not a list", {"seq": 1, "changes": {"op": "add"}}, "changes: Expected array"),
    ("bad op", _with_change(op="delete"), "changes[1].op: Invalid enum value 'delete'"),
    ("bad list", _with_change(list="rules"), "changes[1].list: Invalid enum value 'rules'"),
    ("missing op", {"seq": 5, "changes": [{"list": "black", "imei": IMEI}]}, "missing required field op"),
    ("missing imei", {"seq": 5, "changes": [{"op": "add", "list": "black"}]}, "missing required field imei"),
    ("imei too short", _with_change(imei="3520990017614"), "changes[1].imei: '3520990017614' is not 14-16 digits"),
    ("imei too long", _with_change(imei="35209900176148012"), "changes[1].imei"),
    ("imei with letters", _with_change(imei="3520990017614A"), "changes[1].imei"),
    ("imei in Arabic-Indic digits", _with_change(imei="٣٥٢٠٩٩٠٠١٧٦١٤٨"), "changes[1].imei"),
    ("imei as a number", _with_change(imei=35209900176148), "changes[1].imei: Expected str, got int"),
    ("imsi missing for exceptions", _with_change(list="exceptions"), "changes[1].imsi: required for the exceptions"),
    ("imsi too short", _with_change(list="exceptions", imsi="0010"), "changes[1].imsi: '0010' is not 5-15 digits"),
    ("imsi too long", _with_change(list="exceptions", imsi="0" * 16), "changes[1].imsi"),
    ("imsi on the blacklist", _with_change(imsi=IMSI), "changes[1].imsi: only the exceptions list takes an IMSI"),
    ("unknown change field", _with_change(reasons="stolen"), "changes[1]: Object contains unknown field reasons"),
    ("unknown top-level field", {**EXAMPLE, "version": 2}, "Object contains unknown field version"),
    ("another feed", {**EXAMPLE, "feed": "other"}, "feed: message of feed 'other', expected 'ceir'"),
    ("empty source", _with_change(source=""), "changes[1].source"),
    ("source with a tab", _with_change(source="a\tb"), "changes[1].source"),
    ("reason too long", _with_change(reason="x" * 1025), "changes[1].reason: Expected str of length <= 1024"),
    ("bad sent_at", {**EXAMPLE, "sent_at": "yesterday"}, "sent_at: Invalid RFC3339"),
]


@pytest.mark.parametrize(("payload", "expected"), [(p, e) for _, p, e in REJECTED], ids=[n for n, _, _ in REJECTED])
def test_malformed_messages_are_rejected_with_a_reason(payload: bytes | Any, expected: str) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    with pytest.raises(ChangeSetError) as info:
        parse_changeset(raw, feed=FEED)
    assert expected in info.value.reason
    assert "`" not in info.value.reason


def test_one_bad_change_rejects_the_whole_set_and_names_it() -> None:
    good = [{"op": "add", "list": "black", "imei": f"3520990017{i:04d}"} for i in range(50)]
    bad = {"op": "add", "list": "exceptions", "imei": IMEI}
    with pytest.raises(ChangeSetError) as info:
        _parse({"seq": 9, "changes": [*good, bad, *good]})
    assert info.value.seq == 9  # the log line can say which message
    assert info.value.reason.startswith("changes[50].imsi")


def test_seq_is_reported_when_the_schema_fails_elsewhere() -> None:
    with pytest.raises(ChangeSetError) as info:
        _parse({"seq": 11, "changes": [{"op": "add", "list": "blue", "imei": IMEI}]})
    assert info.value.seq == 11
    with pytest.raises(ChangeSetError) as info:
        parse_changeset(b"{", feed=FEED)
    assert info.value.seq is None


# -- round trip -------------------------------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=14, max_size=14)
_imsi = st.text(alphabet="0123456789", min_size=5, max_size=15)
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@st.composite
def _changes(draw: st.DrawFn) -> Change:
    list_name = draw(st.sampled_from(LISTS))
    op: Op = draw(st.sampled_from(["add", "remove"]))
    return Change(
        op=op,
        list=list_name,
        imei=draw(_digits),
        imsi=draw(_imsi) if list_name == "exceptions" else "",
        reason=draw(_text),
        source=draw(st.one_of(st.just(FEED if op == "add" else ""), _text.filter(bool))),
    )


@given(
    seq=st.integers(1, 2**63 - 1),
    changes=st.lists(_changes(), max_size=20),
    with_feed=st.booleans(),
    sent_at=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
)
def test_valid_change_sets_round_trip(
    seq: int, changes: list[Change], with_feed: bool, sent_at: datetime | None
) -> None:
    payload = encode_changeset(seq, changes, feed=FEED if with_feed else None, sent_at=sent_at)
    cs = parse_changeset(payload, feed=FEED)
    assert cs == ChangeSet(seq, tuple(changes), sent_at)
