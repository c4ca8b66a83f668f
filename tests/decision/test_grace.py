"""The grace-period state machine in virtual time (a 60-day grace in milliseconds): every
transition, expiry exactly at the deadline, appeal and restore; and, with hypothesis,
random operations against a plain model of the table in the module's docstring."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s13eir.decision.grace import (
    DAY_S,
    Grace,
    GraceConfig,
    GraceError,
    GraceReason,
    Stage,
    advance,
    apply,
    grace_status,
    open_grace,
)
from s13eir.decision.model import EquipmentStatus as ES

CONFIG = GraceConfig()
IMEI, IMSI = "35209900176148", "214010000000001"
T0 = 1.8e9


def opened(reason: GraceReason = GraceReason.UNREGISTERED) -> Grace:
    g, event = open_grace(IMEI, IMSI, reason, T0, CONFIG)
    assert event.kind == "seen" and event.deadline == T0 + CONFIG.period_s(reason) and event.imsi == IMSI
    return g


def test_an_unregistered_device_is_told_works_then_is_blocked_exactly_at_its_deadline() -> None:
    g = opened()
    assert grace_status(g, T0, CONFIG) is ES.GREYLISTED  # works, tracked
    (notified,) = apply(g, "notified", T0 + 5, CONFIG, by="smsc")
    assert notified.stage is Stage.NOTIFIED and notified.by == "smsc"
    just_before = g.deadline - 0.001
    assert advance(g, just_before) is None and grace_status(g, just_before, CONFIG) is ES.GREYLISTED
    assert grace_status(g, g.deadline, CONFIG) is ES.BLACKLISTED  # exactly at it, even before advance()
    blocked = advance(g, g.deadline)
    assert blocked is not None and blocked.kind == "blocked" and blocked.t == g.deadline
    assert advance(g, g.deadline + 1) is None  # once
    assert [h[1] for h in g.history] == ["seen", "notified", "blocked"]


def test_registering_in_time_allows_it_for_good() -> None:
    g = opened()
    (ev,) = apply(g, "registered", T0 + 10 * DAY_S, CONFIG, by="self-care")
    assert ev.stage is Stage.ALLOWED and grace_status(g, T0 + 400 * DAY_S, CONFIG) is None
    assert advance(g, T0 + 400 * DAY_S) is None
    with pytest.raises(GraceError, match="appealed is not possible once allowed"):
        apply(g, "appealed", T0 + 11 * DAY_S, CONFIG)


def test_an_appeal_moves_the_deadline_and_service_goes_on() -> None:
    g = opened(GraceReason.DUPLICATE)  # 15 days
    (ev,) = apply(g, "appealed", T0 + 14 * DAY_S, CONFIG, by="subscriber", note="my phone")
    assert ev.deadline == T0 + 15 * DAY_S + 14 * DAY_S and ev.note == "my phone"
    assert grace_status(g, T0 + 20 * DAY_S, CONFIG) is ES.GREYLISTED
    assert advance(g, T0 + 29 * DAY_S).kind == "blocked"  # type: ignore[union-attr]


def test_a_blocked_device_appeals_or_is_restored() -> None:
    g = opened(GraceReason.DUPLICATE)
    events = apply(g, "appealed", T0 + 20 * DAY_S, CONFIG)  # past the deadline: blocked first
    assert [e.kind for e in events] == ["blocked", "appealed"]
    assert g.deadline == T0 + 34 * DAY_S and grace_status(g, T0 + 21 * DAY_S, CONFIG) is ES.GREYLISTED
    (restored,) = apply(g, "restored", T0 + 22 * DAY_S, CONFIG, by="police")  # a recovered stolen phone
    assert restored.stage is Stage.ALLOWED and grace_status(g, T0 + 50 * DAY_S, CONFIG) is None


def test_an_operation_refused_still_reports_the_expiry() -> None:
    g = opened()
    with pytest.raises(GraceError) as refused:
        apply(g, "notified", T0 + 61 * DAY_S, CONFIG)
    assert [e.kind for e in refused.value.events] == ["blocked"] and g.stage is Stage.BLOCKED
    with pytest.raises(GraceError, match="not a grace operation"):
        apply(g, "forgotten", T0, CONFIG)


def test_the_periods_and_verdicts_are_the_operator_s() -> None:
    cfg = GraceConfig(periods_days={"unregistered": 0.5}, during="whitelisted", after="greylisted")
    g, ev = open_grace(IMEI, IMSI, GraceReason.UNREGISTERED, T0, cfg)
    assert ev.deadline == T0 + 43200 and grace_status(g, T0, cfg) is ES.WHITELISTED
    assert grace_status(g, T0 + 43200, cfg) is ES.GREYLISTED
    assert open_grace(IMEI, IMSI, GraceReason.PAIRING, T0, cfg)[1].deadline == T0 + 30 * DAY_S  # no period: 30 days


# -- against a plain model ----------------------------------------------------------------

_FROM = {
    "notified": {"seen"},
    "registered": {"seen", "notified", "appealed", "blocked"},
    "appealed": {"seen", "notified", "blocked"},
    "restored": {"blocked", "appealed"},
    "released": {"seen", "notified", "appealed", "blocked"},
}
_TO = {"notified": "notified", "registered": "allowed", "appealed": "appealed", "restored": "allowed",
       "released": "allowed"}  # fmt: skip


@settings(max_examples=300)
@given(
    st.sampled_from(list(GraceReason)),
    st.lists(st.tuples(st.sampled_from([*_FROM, "tick"]), st.floats(0, 40 * DAY_S)), max_size=25),
)
def test_random_operations_follow_the_table(reason: GraceReason, ops: list[tuple[str, float]]) -> None:
    g, _ = open_grace(IMEI, IMSI, reason, T0, CONFIG)
    stage, deadline, now, kinds = "seen", T0 + CONFIG.period_s(reason), T0, ["seen"]
    for op, dt in ops:
        now += dt
        if stage in ("seen", "notified", "appealed") and now >= deadline:
            stage = "blocked"
            kinds.append("blocked")
        if op == "tick":
            advance(g, now)
        elif stage in _FROM[op]:
            if op == "appealed":
                deadline = max(now, deadline) + CONFIG.appeal_days * DAY_S
            stage = _TO[op]
            kinds.append(op)
            apply(g, op, now, CONFIG)
        else:
            with pytest.raises(GraceError):
                apply(g, op, now, CONFIG)
        assert g.stage.value == stage and g.deadline == deadline
        blocked = stage == "blocked"
        want = None if stage == "allowed" else ES.BLACKLISTED if blocked else ES.GREYLISTED
        assert grace_status(g, now, CONFIG) is want
    assert [h[1] for h in g.history] == kinds[-50:]
    assert all(a[0] <= b[0] for a, b in zip(g.history, g.history[1:], strict=False))
