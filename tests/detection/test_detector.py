"""The detection core in virtual time: each rule trips on its planted pattern (ITU-T
Q.5052) and not on the legitimate look-alikes its defaults were chosen for: SIM swaps,
travellers who fly, second-hand sales, software updates."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from s13eir.decision.imei import luhn_check_digit
from s13eir.detection.detector import Detector, Finding, is_test_tac
from s13eir.detection.observation import Location, Observation, Rat, TacInfo, distance_km
from s13eir.detection.rules import DAY_S, Action, DetectionConfig, DistinctImsis, Rules

MADRID = Location("Madrid", 40.4168, -3.7038)
MADRID_2 = Location("Madrid", 40.45, -3.69)  # a second pool in the same city
BARCELONA = Location("Barcelona", 41.3874, 2.1686)
LISBON = Location("Lisbon", 38.7223, -9.1393)
PEERS = {"mme-mad": MADRID, "mme-mad2": MADRID_2, "mme-bcn": BARCELONA, "mme-lis": LISBON}
IMEI = "35209900176148"


def detector(**rules: object) -> Detector:
    return Detector(DetectionConfig(enabled=True, rules=Rules(**rules)), PEERS)  # type: ignore[arg-type]


def obs(t: float, imsi: str | None, peer: str = "mme-mad", imei: str = IMEI, **kw: object) -> Observation:
    return Observation(t, imei, imsi, peer, Rat.EUTRAN, **kw)  # type: ignore[arg-type]


def run(d: Detector, observations: list[Observation]) -> list[Finding]:
    out: list[Finding] = []
    for o in observations:
        out += d.observe(o, o.t)
    return out


def rules_of(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def imsi(n: int) -> str:
    return f"21401{n:010d}"


def test_the_geometry() -> None:
    assert 480 < distance_km(MADRID, BARCELONA) < 520
    assert distance_km(MADRID, MADRID) == 0
    assert distance_km(MADRID, MADRID_2) < 10


# -- distinct IMSIs (§7.1.1) and the daily average (§7.1.2) -------------------------------


def test_distinct_imsis_trips_at_the_threshold_and_reports_each_new_one_once() -> None:
    d = detector(distinct_imsis=DistinctImsis(threshold=5, window_days=7))
    found = run(d, [obs(i * 3600, imsi(i)) for i in range(4)])
    assert "distinct_imsis" not in rules_of(found)
    fifth = d.observe(obs(5 * 3600, imsi(4)), 5 * 3600)
    (f,) = [x for x in fifth if x.rule == "distinct_imsis"]
    assert f.imsis == tuple(imsi(i) for i in range(5)) and f.action is Action.OBSERVE
    assert not [x for x in d.observe(obs(6 * 3600, imsi(2)), 6 * 3600) if x.rule == "distinct_imsis"]  # seen
    assert [x.rule for x in d.observe(obs(7 * 3600, imsi(9)), 7 * 3600)] == ["distinct_imsis"]  # a new one


def test_distinct_imsis_outside_the_window_do_not_count() -> None:
    d = detector(distinct_imsis=DistinctImsis(threshold=3, window_days=1))
    found = run(d, [obs(i * DAY_S * 0.6, imsi(i)) for i in range(6)])  # never 3 within one day
    assert "distinct_imsis" not in rules_of(found)


def test_daily_average_trips_after_enough_seen_days() -> None:
    d = detector()  # 4.0 a day over at least 5 seen days
    days = [obs(day * DAY_S + k * 600, imsi(day * 10 + k)) for day in range(5) for k in range(4)]
    found = run(d, days)
    daily = [f for f in found if f.rule == "daily_average"]
    assert len(daily) == 1 and daily[0].t >= 4 * DAY_S  # on the fifth day, not before


def test_one_busy_day_is_not_an_average() -> None:
    d = detector()
    busy = [obs(k * 60, imsi(k)) for k in range(8)]  # 8 SIMs tried in a shop on one day
    quiet = [obs(day * DAY_S, imsi(0)) for day in range(1, 6)]
    assert "daily_average" not in rules_of(run(d, busy + quiet))


# -- time/distance (§7.4) and concurrent use ------------------------------------------------


def test_two_imsis_too_far_apart_for_the_time_between_them() -> None:
    d = detector()
    found = run(d, [obs(0, imsi(1), "mme-mad"), obs(600, imsi(2), "mme-bcn")])  # 500 km in 10 minutes
    (f,) = [x for x in found if x.rule == "time_distance"]
    assert f.imsis == (imsi(1), imsi(2)) and "Madrid to Barcelona" in f.detail.replace("Barcelona to Madrid", "")
    assert len(f.evidence) == 2


def test_a_traveller_who_flies_keeps_the_imsi_and_trips_nothing() -> None:
    d = detector()
    trips = [obs(0, imsi(1), "mme-mad"), obs(600, imsi(1), "mme-bcn"), obs(1200, imsi(1), "mme-lis")]
    assert run(d, trips) == []


def test_a_sim_swapped_before_a_flight_is_seen_at_a_plausible_speed() -> None:
    d = detector()
    # The old SIM in Madrid, the new one in Barcelona 1 h 10 min later: 430 km/h.
    assert run(d, [obs(0, imsi(1), "mme-mad"), obs(4200, imsi(2), "mme-bcn")]) == []


def test_two_pools_of_one_city_are_not_a_distance() -> None:
    d = detector()
    assert "time_distance" not in rules_of(run(d, [obs(0, imsi(1), "mme-mad"), obs(1, imsi(2), "mme-mad2")]))


def test_concurrent_use_is_a_then_b_then_a_on_different_peers() -> None:
    d = detector()
    found = run(d, [obs(0, imsi(1), "mme-mad"), obs(60, imsi(2), "mme-mad2"), obs(120, imsi(1), "mme-mad")])
    (f,) = [x for x in found if x.rule == "concurrent_use"]
    assert set(f.imsis) == {imsi(1), imsi(2)} and len(f.evidence) == 3


def test_a_sim_swap_is_not_concurrent_use() -> None:
    d = detector()
    assert run(d, [obs(0, imsi(1), "mme-mad"), obs(90, imsi(2), "mme-mad2")]) == []
    # and a SIM tried and put back in the same pool is not either
    d2 = detector()
    assert run(d2, [obs(0, imsi(1)), obs(60, imsi(2)), obs(120, imsi(1))]) == []


# -- identifiers, software version, technology ----------------------------------------------


@pytest.mark.parametrize(
    ("imei14", "why"),
    [("00101500000000", "test TAC"), ("00440000000001", "test TAC"), ("00000000123456", "never allocated"),
     ("99999999999999", "repeated")],
)  # fmt: skip
def test_invalid_identifiers(imei14: str, why: str) -> None:
    d = detector()
    (f,) = d.observe(obs(0, imsi(1), imei=imei14), 0)
    assert f.rule == "invalid_identifier" and why in f.detail
    assert d.observe(obs(1, imsi(1), imei=imei14), 1) == []  # reported once


@given(st.from_regex(r"[1-9][0-9]{13}", fullmatch=True))
def test_the_luhn_rule(imei14: str) -> None:
    good = luhn_check_digit(imei14)
    for digit in range(10):
        found = detector().observe(obs(0, imsi(1), imei=imei14, imei15=f"{imei14}{digit}"), 0)
        wrong = digit not in (good, 0)  # 0 is the spare digit sent in place of the check digit
        assert (["invalid_identifier"] if wrong else []) == rules_of(found), (imei14, digit)


def test_test_tacs_are_what_ts_22016_reserves() -> None:
    assert is_test_tac("00100100000000") and is_test_tac("00101700000000") and is_test_tac("00910000000000")
    assert not is_test_tac("00101800000000") and not is_test_tac("00100000000000") and not is_test_tac(IMEI)


def test_software_version_reserved_and_downgrade_but_not_an_update() -> None:
    d = detector()
    assert run(d, [obs(0, imsi(1), sv="03"), obs(10, imsi(1), sv="04")]) == []  # an update
    (down,) = d.observe(obs(20, imsi(1), sv="02"), 20)
    assert down.rule == "software_version" and "02 after 04" in down.detail and len(down.evidence) == 2
    (reserved,) = detector().observe(obs(0, imsi(1), sv="99"), 0)
    assert "reserved" in reserved.detail


def test_unexpected_technology_needs_the_tac_database() -> None:
    info = TacInfo("Feature phone X", "Feature phone", frozenset({Rat.GERAN_UTRAN}))
    d = Detector(DetectionConfig(enabled=True), PEERS, lambda t: info if t == IMEI[:8] else None)
    (f,) = d.observe(obs(0, imsi(1)), 0)  # seen on LTE
    assert f.rule == "unexpected_technology" and "Feature phone X" in f.detail
    assert d.observe(msgspec.structs.replace(obs(1, imsi(1)), rat=Rat.GERAN_UTRAN), 1) == []
    assert detector().observe(obs(0, imsi(1)), 0) == []  # no database: the rule is off


def test_a_disabled_rule_and_the_configured_action() -> None:
    d = detector(distinct_imsis=DistinctImsis(threshold=2, action=Action.BLOCK))
    (f,) = [x for x in run(d, [obs(0, imsi(1)), obs(1, imsi(2))]) if x.rule == "distinct_imsis"]
    assert f.action is Action.BLOCK
    d2 = detector(distinct_imsis=DistinctImsis(threshold=2, enabled=False))
    assert "distinct_imsis" not in rules_of(run(d2, [obs(0, imsi(1)), obs(1, imsi(2))]))


def test_expire_forgets_what_every_window_left_behind() -> None:
    d = detector()
    d.observe(obs(0, imsi(1)), 0)
    d.observe(obs(0, imsi(1), imei="35450712345675"), 0)
    assert d.expire(d.horizon - 1) == 0 and len(d) == 2
    d.observe(obs(d.horizon, imsi(1)), d.horizon)
    assert d.expire(d.horizon + 1) == 1 and len(d) == 1  # the one not seen since


# -- legitimate lives, generated ------------------------------------------------------------

PEER_NAMES = sorted(PEERS)


@st.composite
def legitimate_life(draw: st.DrawFn) -> list[Observation]:
    """One phone over a month: its owner's SIM, up to two swaps (a new operator, a sale
    second-hand), each days apart; attaches a few times a day; trips between cities at
    most as fast as an airliner, with the same SIM; updates that raise the SVN."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))  # one draw: a month of attaches
    swaps = sorted(rnd.uniform(2 * DAY_S, 28 * DAY_S) for _ in range(rnd.randint(0, 2)))
    t, svn, out = 0.0, 10, []
    peer = rnd.choice(PEER_NAMES)
    while t < 30 * DAY_S:
        t += rnd.uniform(600, DAY_S / 2)
        sim = sum(1 for s in swaps if s <= t)
        if rnd.randint(0, 9) == 0:  # a trip: at least the flight time to get there
            target = rnd.choice(PEER_NAMES)
            t += distance_km(PEERS[peer], PEERS[target]) / 900 * 3600
            peer = target
        if rnd.randint(0, 19) == 0:
            svn += 1
        out.append(Observation(t, IMEI, imsi(sim), peer, Rat.EUTRAN, f"{svn:02d}"))
    return out


@given(legitimate_life())
def test_legitimate_lives_trip_no_rule(life: list[Observation]) -> None:
    assert run(detector(), life) == []


@given(legitimate_life(), st.integers(0, 3))
def test_a_clone_next_to_a_legitimate_life_is_found(life: list[Observation], at: int) -> None:
    """The same life, plus a clone: another IMSI with the same IMEI in Lisbon while the
    owner is attached somewhere at least 150 km away."""
    owner = next((o for o in life[at:] if distance_km(PEERS[o.peer], LISBON) >= 150), None)
    if owner is None:
        return
    clone = Observation(owner.t + 1, IMEI, imsi(99), "mme-lis", Rat.EUTRAN, owner.sv)
    merged = sorted([*life, clone], key=lambda o: o.t)
    assert "time_distance" in rules_of(run(detector(), merged))


# -- the shortcuts are the full path, faster ----------------------------------------------

_shortcut_checks = st.lists(
    st.tuples(
        st.sampled_from([0.0, 10.0, 61.0, 120.0, 600.0, 20000.0, 86400.0, -30.0]),  # -30: out of order
        st.one_of(st.none(), st.integers(0, 2).map(imsi)),
        st.sampled_from(["mme-mad", "mme-bcn", "mme-mad2", "mme-unknown"]),
        st.sampled_from([Rat.EUTRAN, Rat.EUTRAN, Rat.NR]),
        st.sampled_from([None, "01", "01", "02", "99"]),
        st.sampled_from([None, None, "0", "5"]),
        st.sampled_from([IMEI, "35450712345675"]),
    ),
    max_size=60,
)


@settings(max_examples=600)
@given(_shortcut_checks, st.sampled_from([1.0, 0.001]), st.booleans())
# A count window shorter than the pairwise ones: the other IMSI has left it, not the pairs'.
@example([(0.0, imsi(1), "mme-mad", Rat.EUTRAN, None, None, IMEI),
          (600.0, imsi(2), "mme-bcn", Rat.EUTRAN, None, None, IMEI)], 0.001, False)  # fmt: skip
# The same SIM again, in another city: a new place for the pair with the other IMSI.
@example([(0.0, imsi(1), "mme-mad", Rat.EUTRAN, None, None, IMEI),
          (10.0, imsi(2), "mme-mad", Rat.EUTRAN, None, None, IMEI),
          (60.0, imsi(2), "mme-bcn", Rat.EUTRAN, None, None, IMEI)], 1.0, False)  # fmt: skip
def test_the_shortcuts_find_what_the_full_path_finds(
    steps: list[tuple[float, str | None, str, Rat, str | None, str | None, str]], window_days: float, tacs: bool
) -> None:
    rules = Rules(distinct_imsis=DistinctImsis(threshold=3, window_days=window_days))
    config = DetectionConfig(enabled=True, max_recent=8, rules=rules)
    info = TacInfo("Model X", "Smartphone", frozenset({Rat.EUTRAN})) if tacs else None
    lookup = (lambda t: info if t == IMEI[:8] else None) if tacs else None
    fast, full = Detector(config, PEERS, lookup), Detector(config, PEERS, lookup, shortcuts=False)
    t = 0.0
    for dt, who, peer, rat, sv, d15, imei in steps:
        t += dt
        o = Observation(t, imei, who, peer, rat, sv, None if d15 is None else imei + d15)
        assert fast.observe(o, t) == full.observe(o, t)
    assert fast._devices == full._devices
