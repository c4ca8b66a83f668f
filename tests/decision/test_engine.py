"""The decision engine, and the snapshot index checked against a naive model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s13eir.decision.engine import decide, policy_verdict, strictest
from s13eir.decision.model import (
    NO_FACTS,
    Entry,
    EquipmentStatus,
    ExceptionEntry,
    Facts,
    ListKind,
    Rule,
    UnknownPolicy,
)
from s13eir.lists.snapshot import ListSnapshot, SnapshotBuilder

B, G, W = ListKind.BLACK, ListKind.GREY, ListKind.WHITE
IMEI = "35209900176148"
IMSI = "001010000000001"
POLICY = UnknownPolicy.WHITELISTED


def entry(kind: ListKind, key: str = IMEI, source: str = "s.csv", detail: str = "") -> Entry:
    return Entry(list=kind, source=source, key=key, detail=detail)


EXC = ExceptionEntry(imei=IMEI, imsi=IMSI, source="exc.csv")

# -- decide(): precedence ------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "imsi", "status", "rule"),
    [
        # An exception pair overrides every list, but only when the request has an IMSI.
        (
            Facts(exception=EXC, imei=(entry(B),), tac=(entry(B, "35209900"),)),
            IMSI,
            EquipmentStatus.WHITELISTED,
            Rule.EXCEPTION,
        ),
        (Facts(exception=EXC, imei=(entry(G),)), IMSI, EquipmentStatus.WHITELISTED, Rule.EXCEPTION),
        (Facts(exception=EXC, imei=(entry(B),)), None, EquipmentStatus.BLACKLISTED, Rule.IMEI),
        (Facts(exception=EXC), None, EquipmentStatus.WHITELISTED, Rule.POLICY),
        # Single IMEI beats range beats TAC, whatever the lists.
        (
            Facts(imei=(entry(W),), range=(entry(B, "a-b"),), tac=(entry(B, "35209900"),)),
            None,
            EquipmentStatus.WHITELISTED,
            Rule.IMEI,
        ),
        (Facts(imei=(entry(G),), range=(entry(B, "a-b"),)), None, EquipmentStatus.GREYLISTED, Rule.IMEI),
        (Facts(range=(entry(W, "a-b"),), tac=(entry(B, "35209900"),)), None, EquipmentStatus.WHITELISTED, Rule.RANGE),
        (Facts(range=(entry(G, "a-b"),), tac=(entry(W, "35209900"),)), None, EquipmentStatus.GREYLISTED, Rule.RANGE),
        (Facts(tac=(entry(B, "35209900"),)), IMSI, EquipmentStatus.BLACKLISTED, Rule.TAC),
        (NO_FACTS, IMSI, EquipmentStatus.WHITELISTED, Rule.POLICY),
    ],
)
def test_precedence(facts: Facts, imsi: str | None, status: EquipmentStatus, rule: Rule) -> None:
    verdict = decide(facts, imsi, POLICY, IMEI)
    assert (verdict.status, verdict.reason.rule) == (status, rule)


def test_exception_reason() -> None:
    verdict = decide(Facts(exception=EXC, imei=(entry(B),)), IMSI, POLICY, IMEI)
    assert verdict.reason.list == "exceptions"
    assert verdict.reason.source == "exc.csv"
    assert verdict.reason.entry == f"{IMEI}/{IMSI}"


def test_listed_reason_carries_the_entry() -> None:
    verdict = decide(Facts(imei=(entry(B, source="black.csv", detail="stolen"),)), None, POLICY, IMEI)
    reason = verdict.reason
    assert (reason.rule, reason.list, reason.source, reason.entry, reason.detail) == (
        Rule.IMEI,
        "black",
        "black.csv",
        IMEI,
        "stolen",
    )


@pytest.mark.parametrize(
    ("kinds", "winner"),
    [
        ((W, B), B),
        ((B, W), B),
        ((W, G), G),
        ((G, W, B), B),
        ((W, W), W),
        ((G,), G),
    ],
)
@pytest.mark.parametrize("level", ["imei", "range", "tac"])
def test_strictest_wins_within_a_level(kinds: tuple[ListKind, ...], winner: ListKind, level: str) -> None:
    # A feed error that puts a stolen phone on a whitelist too must not unblock it.
    entries = tuple(entry(k, source=f"{i}.csv") for i, k in enumerate(kinds))
    verdict = decide(Facts(**{level: entries}), None, POLICY, IMEI)
    assert verdict.status == winner.status
    assert verdict.reason.list == winner.value


def test_strictest_breaks_ties_by_source_then_detail_in_any_order() -> None:
    entries = [entry(G, source="a.csv"), entry(B, source="c.csv"), entry(B, source="b.csv", detail="y"),
               entry(B, source="b.csv", detail="x")]  # fmt: skip
    for order in itertools.permutations(entries):
        best = strictest(tuple(order))
        assert (best.source, best.detail) == ("b.csv", "x")


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        (UnknownPolicy.WHITELISTED, EquipmentStatus.WHITELISTED),
        (UnknownPolicy.GREYLISTED, EquipmentStatus.GREYLISTED),
        (UnknownPolicy.UNKNOWN, None),
    ],
)
def test_every_policy(policy: UnknownPolicy, status: EquipmentStatus | None) -> None:
    verdict = decide(NO_FACTS, None, policy, IMEI)
    assert verdict.status == status
    reason = verdict.reason
    assert (reason.rule, reason.list, reason.source, reason.entry) == (Rule.POLICY, "", "", policy.value)
    assert verdict == policy_verdict(policy)
    # A listed IMEI is unaffected by the policy.
    assert decide(Facts(imei=(entry(W),)), None, policy, IMEI).status == EquipmentStatus.WHITELISTED


# -- the snapshot against a naive model ----------------------------------------------

SEVERITY = {W: 0, G: 1, B: 2}


@dataclass
class Model:
    """The lists as plain Python lists, scanned linearly."""

    imeis: list[tuple[str, ListKind, str, str]] = field(default_factory=list)
    exceptions: list[tuple[str, str, str]] = field(default_factory=list)
    tacs: list[tuple[str, ListKind, str, str]] = field(default_factory=list)
    ranges: list[tuple[str, str, ListKind, str, str]] = field(default_factory=list)

    def decide(self, imei: str, imsi: str | None, policy: UnknownPolicy) -> tuple[EquipmentStatus | None, Rule, str]:
        if imsi is not None and any(i == imei and s == imsi for i, s, _ in self.exceptions):
            return EquipmentStatus.WHITELISTED, Rule.EXCEPTION, "exceptions"
        levels = [
            (Rule.IMEI, [k for i, k, _, _ in self.imeis if i == imei]),
            (Rule.RANGE, [k for f, t, k, _, _ in self.ranges if int(f) <= int(imei) <= int(t)]),
            (Rule.TAC, [k for t, k, _, _ in self.tacs if t == imei[:8]]),
        ]
        for rule, kinds in levels:
            if kinds:
                kind = max(kinds, key=SEVERITY.__getitem__)
                return kind.status, rule, kind.value
        return policy_verdict(policy).status, Rule.POLICY, ""

    def snapshot(self, fp_rate: float) -> ListSnapshot:
        builder = SnapshotBuilder()
        for imei, kind, source, detail in self.imeis:
            builder.add_imei(imei, kind, source, detail)
        for imei, imsi, source in self.exceptions:
            builder.add_exception(imei, imsi, source)
        for tac, kind, source, detail in self.tacs:
            builder.add_tac(tac, kind, source, detail)
        for first, last, kind, source, detail in self.ranges:
            builder.add_range(first, last, kind, source, detail)
        return builder.build(bloom_fp_rate=fp_rate)


IMSIS = ["001010000000001", "001010000000002", "00101", "310150123456789", "001010000000000"]
BAD_IMSIS = ["_001010000000001", "00101000000000١", " 001010000000001", "0010", ""]
kinds = st.sampled_from(ListKind)
sources = st.sampled_from(["a.csv", "b.csv", "c.yaml"])
details = st.sampled_from(["", "stolen", "lost|duplicate"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Model, list[tuple[str, str | None]]]:
    # Few TACs and small serial numbers, so entries collide, share TACs and fall in ranges.
    tacs = draw(st.lists(st.integers(0, 99_999_999).map("{:08d}".format), min_size=1, max_size=3, unique=True))
    imeis = st.builds(lambda t, s: f"{t}{s:06d}", st.sampled_from(tacs), st.integers(0, 25))
    any_imei = st.integers(0, 10**14 - 1).map("{:014d}".format)
    imsis = st.sampled_from(IMSIS)
    model = Model(
        imeis=draw(st.lists(st.tuples(imeis, kinds, sources, details), max_size=25)),
        exceptions=draw(st.lists(st.tuples(imeis, imsis, sources), max_size=8)),
        tacs=draw(st.lists(st.tuples(st.sampled_from(tacs), kinds, sources, details), max_size=3)),
    )
    for first, length, kind, source, detail in draw(
        st.lists(st.tuples(imeis, st.integers(0, 15), kinds, sources, details), max_size=6)
    ):
        model.ranges.append((first, f"{int(first) + length:014d}", kind, source, detail))
    queries = draw(
        st.lists(
            st.tuples(
                st.one_of(imeis, any_imei),
                st.one_of(st.none(), imsis, st.sampled_from(BAD_IMSIS)),
            ),
            min_size=1,
            max_size=25,
        )
    )
    # Every listed IMEI, both ends of every range and every exception pair are queried too.
    queries += [(i, None) for i, _, _, _ in model.imeis]
    queries += [(i, None) for first, last, _, _, _ in model.ranges for i in (first, last)]
    queries += [(i, s) for i, s, _ in model.exceptions]
    return model, queries


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(UnknownPolicy), st.sampled_from([0.001, 0.5]))
def test_snapshot_and_engine_agree_with_a_naive_model(
    scenario: tuple[Model, list[tuple[str, str | None]]], policy: UnknownPolicy, fp_rate: float
) -> None:
    model, queries = scenario
    snapshot = model.snapshot(fp_rate)
    for imei, imsi in queries:
        facts = snapshot.facts(imei, imsi)
        verdict = decide(facts, imsi, policy, imei)
        expected = model.decide(imei, imsi, policy)
        assert (verdict.status, verdict.reason.rule, verdict.reason.list) == expected, (imei, imsi)
        if verdict.reason.rule is Rule.IMEI:
            assert verdict.reason.entry == imei
        if verdict.reason.rule is Rule.EXCEPTION:
            assert verdict.reason.entry == f"{imei}/{imsi}"
        # Everything the snapshot returns really matches the query.
        assert all(e.key == imei for e in facts.imei)
        assert all(e.key == imei[:8] for e in facts.tac)
        for e in facts.range:
            first, last = e.key.split("-")
            assert int(first) <= int(imei) <= int(last)
    counts = snapshot.counts()
    assert counts["exceptions"] == len({(i, s) for i, s, _ in model.exceptions})
    assert counts["ranges"] == len(set(model.ranges))
    for kind in ListKind:
        assert counts[kind.value] == len({r for r in model.imeis if r[1] is kind})


def test_bloom_false_positives_never_change_the_verdict() -> None:
    builder = SnapshotBuilder()
    listed = [f"{35209900000000 + 7 * i:014d}" for i in range(300)]
    for imei in listed:
        builder.add_imei(imei, B, "black.csv", "stolen")
    builder.add_exception("35209900000001", IMSI, "exc.csv")
    snapshot = builder.build(bloom_fp_rate=0.9)  # a filter that says "maybe" most of the time
    unlisted = [f"{35209900000000 + 7 * i + 3:014d}" for i in range(2000)]
    for imei in unlisted:
        assert snapshot.facts(imei, IMSI) is NO_FACTS
        assert decide(snapshot.facts(imei, None), None, UnknownPolicy.UNKNOWN, imei).status is None
    for imei in listed:
        assert decide(snapshot.facts(imei, None), None, POLICY, imei).status == EquipmentStatus.BLACKLISTED
    stats = snapshot.stats
    assert stats.false_positives > 500
    assert stats.positives >= stats.false_positives + len(listed)
    assert stats.positives + stats.negatives == 2 * len(unlisted) + len(listed)


def test_bloom_negative_returns_the_shared_no_facts() -> None:
    builder = SnapshotBuilder()
    builder.add_imei(IMEI, B, "black.csv")
    snapshot = builder.build()
    assert snapshot.facts("35450712345675", None) is NO_FACTS
    assert snapshot.stats.negatives == 1
    assert snapshot.stats.positives == 0


def test_exception_pair_needs_a_valid_matching_imsi() -> None:
    builder = SnapshotBuilder()
    builder.add_imei(IMEI, B, "black.csv")
    builder.add_exception(IMEI, IMSI, "exc.csv")
    builder.add_exception(IMEI, "00101", "exc.csv")
    snapshot = builder.build()
    assert snapshot.facts(IMEI, IMSI).exception == ExceptionEntry(IMEI, IMSI, "exc.csv")
    assert snapshot.facts(IMEI, "00101").exception == ExceptionEntry(IMEI, "00101", "exc.csv")
    # Leading zeros and length are part of the IMSI; int() tricks must not match.
    for imsi in (None, "1010000000001", "01010000000001", "_001010000000001", "00101000000000١", "001010000000002"):
        facts = snapshot.facts(IMEI, imsi)
        assert facts.exception is None
        assert decide(facts, imsi, POLICY, IMEI).status == EquipmentStatus.BLACKLISTED


def test_exception_only_imei_without_imsi_is_not_a_false_positive() -> None:
    builder = SnapshotBuilder()
    builder.add_exception(IMEI, IMSI, "exc.csv")
    snapshot = builder.build()
    assert snapshot.facts(IMEI, None) is NO_FACTS
    assert snapshot.stats.false_positives == 0


def test_duplicate_rows_are_idempotent() -> None:
    builder = SnapshotBuilder()
    for _ in range(3):
        builder.add_imei(IMEI, B, "black.csv", "stolen")
        builder.add_exception(IMEI, IMSI, "exc.csv")
        builder.add_tac("35209900", G, "rules.yaml", "model")
        builder.add_range("35209900000000", "35209900999999", W, "rules.yaml")
    builder.add_exception(IMEI, IMSI, "other.csv")  # the same pair again: first source kept
    snapshot = builder.build()
    assert snapshot.counts() == {"black": 1, "grey": 0, "white": 0, "exceptions": 1, "tac": 1, "ranges": 1}
    facts = snapshot.facts(IMEI, IMSI)
    assert len(facts.imei) == len(facts.tac) == len(facts.range) == 1
    assert facts.exception == ExceptionEntry(IMEI, IMSI, "exc.csv")


def test_same_imei_on_several_lists_and_sources() -> None:
    builder = SnapshotBuilder()
    builder.add_imei(IMEI, W, "white.csv")
    builder.add_imei(IMEI, B, "black.csv", "stolen")
    builder.add_imei(IMEI, G, "grey.csv")
    snapshot = builder.build()
    facts = snapshot.facts(IMEI, None)
    assert {(e.list, e.source) for e in facts.imei} == {(W, "white.csv"), (B, "black.csv"), (G, "grey.csv")}
    assert decide(facts, None, POLICY, IMEI).reason.detail == "stolen"
    # Neighbouring keys do not leak into the IMEI's entries.
    assert snapshot.facts("35209900176147", None) is NO_FACTS
    assert snapshot.facts("35209900176149", None) is NO_FACTS


def test_overlapping_ranges_are_all_found() -> None:
    builder = SnapshotBuilder()
    builder.add_range("00000000000000", "99999999999999", W, "r", "everything")
    builder.add_range("35000000000000", "35000000000100", G, "r")
    builder.add_range("35000000000050", "35000000000060", B, "r")
    builder.add_range("35000000000070", "35000000000080", B, "r")
    snapshot = builder.build()
    found = {e.key for e in snapshot.facts("35000000000055", None).range}
    assert found == {"00000000000000-99999999999999", "35000000000000-35000000000100", "35000000000050-35000000000060"}
    assert decide(snapshot.facts("35000000000055", None), None, POLICY, "x").status == EquipmentStatus.BLACKLISTED
    assert decide(snapshot.facts("35000000000065", None), None, POLICY, "x").status == EquipmentStatus.GREYLISTED
    assert decide(snapshot.facts("36000000000000", None), None, POLICY, "x").reason.detail == "everything"


def test_many_distinct_details_spill_over_without_losing_entries() -> None:
    # More distinct (list, source, detail) triples than the 16-bit packed index holds.
    builder = SnapshotBuilder()
    n = (1 << 16) + 50
    for i in range(n):
        builder.add_imei(f"{10**13 + i:014d}", B, "black.csv", f"reason {i}")
    builder.add_imei(f"{10**13 + n - 1:014d}", W, "white.csv", "reason 0")
    snapshot = builder.build()
    assert snapshot.counts()["black"] == n
    for i in (0, 1 << 15, (1 << 16) - 1, 1 << 16, n - 1):
        facts = snapshot.facts(f"{10**13 + i:014d}", None)
        assert [e.detail for e in facts.imei if e.list is B] == [f"reason {i}"]
    assert len(snapshot.facts(f"{10**13 + n - 1:014d}", None).imei) == 2


def test_empty_snapshot_and_reporting() -> None:
    snapshot = ListSnapshot.empty()
    assert snapshot.facts(IMEI, IMSI) is NO_FACTS
    assert snapshot.counts() == {"black": 0, "grey": 0, "white": 0, "exceptions": 0, "tac": 0, "ranges": 0}
    assert snapshot.memory_bytes() >= 0
    builder = SnapshotBuilder()
    for i in range(1000):
        builder.add_imei(f"{35209900000000 + i:014d}", G, "grey.csv")
    assert builder.build().memory_bytes() >= 8 * 1000


def test_builder_rejects_bad_keys_and_reuse() -> None:
    builder = SnapshotBuilder()
    for bad in ("3520990017614", "352099001761481", "3520990017614X", "٣٥٢٠٩٩٠٠١٧٦١٤٨"):
        with pytest.raises(ValueError):
            builder.add_imei(bad, B, "x")
    with pytest.raises(ValueError):
        builder.add_exception(IMEI, "0010", "x")
    with pytest.raises(ValueError):
        builder.add_tac("3520990", B, "x")
    with pytest.raises(ValueError):
        builder.add_range("35209900000002", "35209900000001", B, "x")
    builder.build()
    with pytest.raises(RuntimeError):
        builder.add_imei(IMEI, B, "x")
