"""IMSI ranges with a policy of their own: the sorted index against a brute-force scan
(hypothesis), 100,000 ranges, overlaps and bad bounds refused, and the ranges' verdicts
in the modes' precedence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s13eir.decision.engine import policy_verdict
from s13eir.decision.imsi_ranges import ImsiRange, ImsiRangeError, ImsiRanges
from s13eir.decision.model import EquipmentStatus as ES
from s13eir.decision.model import Rule, UnknownPolicy
from s13eir.decision.modes import ModesConfig, imsi_ranges, with_modes


def brute(ranges: list[ImsiRange], imsi: str) -> ImsiRange | None:
    key = imsi.ljust(15, "0")
    hits = [r for r in ranges if r.bounds()[0] <= key <= r.bounds()[1]]
    assert len(hits) <= 1
    return hits[0] if hits else None


digits = st.text("0123456789", min_size=1, max_size=15)


@settings(max_examples=300)
@given(st.lists(st.tuples(digits, st.one_of(st.none(), digits)), max_size=12), st.lists(digits, max_size=30))
def test_the_index_finds_what_a_scan_finds(specs: list[tuple[str, str | None]], imsis: list[str]) -> None:
    ranges = []
    for a, b in specs:
        r = ImsiRange(prefix=a) if b is None else ImsiRange(start=min(a, b), end=max(a, b))
        try:
            if r.bounds()[0] <= r.bounds()[1]:
                ImsiRanges([*ranges, r])  # keep it only if it does not overlap the others
                ranges.append(r)
        except ImsiRangeError:
            pass
    index = ImsiRanges(ranges)
    for imsi in imsis + [r.bounds()[0] for r in ranges] + [r.bounds()[1] for r in ranges]:
        assert index.find(imsi) is brute(ranges, imsi)


def test_a_hundred_thousand_ranges() -> None:
    rnd = random.Random(7)
    starts = sorted(rnd.sample(range(10**9), 100_000))
    ranges = [ImsiRange(start=f"214010{s:09d}", end=f"214010{s:09d}", policy="greylisted", name=f"r{s}")
              for s in starts]  # fmt: skip
    index = ImsiRanges(ranges)
    assert len(index) == 100_000
    for s in rnd.sample(starts, 1000):
        found = index.find(f"214010{s:09d}")
        assert found is not None and found.name == f"r{s}"
    assert index.find("214011000000000") is None  # past every range


def test_overlaps_and_bad_bounds_are_refused() -> None:
    with pytest.raises(ImsiRangeError, match="overlap"):
        ImsiRanges([ImsiRange(prefix="21401", name="home"), ImsiRange(prefix="214019", name="IoT")])
    for bad in (ImsiRange(prefix="2140a"), ImsiRange(start="2", end="1"), ImsiRange(start="214"),
                ImsiRange(prefix="21401", start="1", end="2"), ImsiRange(prefix="1" * 16)):  # fmt: skip
        with pytest.raises(ImsiRangeError):
            bad.bounds()


def test_ranges_in_the_modes_precedence() -> None:
    iot = ImsiRange(start="214017", end="2140170", policy="greylisted", name="IoT")
    cfg = ModesConfig(mode="restrictive", bypass_imsi_prefixes=("21401999",), imsi_ranges=(iot,))
    ranges = imsi_ranges(cfg)
    unlisted = policy_verdict(UnknownPolicy.WHITELISTED)
    v, _ = with_modes(unlisted, "35209900176148", "214019990000001", 0.0, cfg, ranges=ranges)
    assert v is unlisted  # bypass: as permissive
    v, _ = with_modes(unlisted, "35209900176148", "214017000000001", 0.0, cfg, ranges=ranges)
    assert v.status is ES.GREYLISTED and v.reason.rule is Rule.IMSI_RANGE and v.reason.detail == "IoT"
    v, w = with_modes(unlisted, "35209900176148", "214010000000001", 0.0, cfg, ranges=ranges)
    assert v.reason.rule is Rule.GRACE and w.open_grace is not None  # in no range: the mode


def test_software_version_rules_per_tac() -> None:
    from s13eir.decision.sv_rules import SvRule, SvRuleError, SvRules

    rules = SvRules([SvRule(tac="35209900", start="00", end="03", name="CVE-2026-1234 baseband"),
                     SvRule(tac="35209900", start="90", end="99", policy="blacklisted")])  # fmt: skip
    assert rules.find("35209900176148", "02").name == "CVE-2026-1234 baseband"  # type: ignore[union-attr]
    assert rules.find("35209900176148", "04") is None and rules.find("35209900176148", None) is None
    assert rules.find("35450712345675", "02") is None and len(rules) == 2
    bad_rules = [
        [SvRule(tac="3520990")],
        [SvRule(tac="35209900", start="5")],
        [SvRule(tac="35209900", start="09", end="03")],
        [SvRule(tac="35209900", end="05"), SvRule(tac="35209900", start="05")],  # overlapping
    ]
    for bad in bad_rules:
        with pytest.raises(SvRuleError):
            SvRules(bad)
    cfg = ModesConfig(sv_rules=(SvRule(tac="35209900", end="03", name="old firmware"),))
    unlisted = policy_verdict(UnknownPolicy.WHITELISTED)
    v, _ = with_modes(unlisted, "35209900176148", None, 0.0, cfg, sv="01", sv_rules=SvRules(cfg.sv_rules))
    assert v.status is ES.GREYLISTED and v.reason.rule is Rule.SOFTWARE_VERSION and v.reason.entry == "35209900/01"
    v, _ = with_modes(unlisted, "35209900176148", None, 0.0, cfg, sv="07", sv_rules=SvRules(cfg.sv_rules))
    assert v is unlisted
