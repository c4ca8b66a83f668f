"""The operating modes over the lists' verdict (Q.Sup73): the precedence table of
decision/modes.py, row by row, and in virtual time a device's way from unregistered to
blocked or registered."""

from __future__ import annotations

import pytest

from s13eir.decision.engine import decide
from s13eir.decision.grace import DAY_S, GraceConfig, GraceReason, apply, open_grace
from s13eir.decision.model import (
    Entry,
    ExceptionEntry,
    Facts,
    ListKind,
    Rule,
    UnknownPolicy,
)
from s13eir.decision.model import (
    EquipmentStatus as ES,
)
from s13eir.decision.modes import Amnesty, ModesConfig, Write, bypasses, with_modes
from s13eir.decision.pairing import PairingConfig
from s13eir.decision.pairing import PairingResult as P

IMEI, HOME, ROAMER, IOT = "35209900176148", "214010000000001", "208150000000001", "214019990000001"
T0 = 1.8e9


def listed(kind: ListKind | None = None, exception: bool = False, policy: UnknownPolicy = UnknownPolicy.WHITELISTED):
    facts = Facts(
        exception=ExceptionEntry(IMEI, HOME, "ceir") if exception else None,
        imei=(Entry(kind, "ceir", IMEI, "x"),) if kind is not None else (),
    )
    return decide(facts, HOME, policy, IMEI)


def cfg(mode: str = "restrictive", **kw: object) -> ModesConfig:
    return ModesConfig(mode=mode, home_plmns=("21401",), bypass_imsi_prefixes=("2140199",), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["permissive", "restrictive", "authorization"])
def test_no_mode_unblocks_a_listed_phone_and_exceptions_stand(mode: str) -> None:
    for kind, status in ((ListKind.BLACK, ES.BLACKLISTED), (ListKind.GREY, ES.GREYLISTED)):
        v, w = with_modes(listed(kind), IMEI, HOME, T0, cfg(mode), P.IMEI_PAIRED_ELSEWHERE)
        assert v.status is status and v.reason.rule is Rule.IMEI and w == Write()
    v, _ = with_modes(listed(ListKind.BLACK, exception=True), IMEI, HOME, T0, cfg(mode), P.IMSI_LOCKED_ELSEWHERE)
    assert v.status is ES.WHITELISTED and v.reason.rule is Rule.EXCEPTION


def test_roamers_and_bypass_ranges_are_judged_as_permissive() -> None:
    assert bypasses(ROAMER, cfg()) and bypasses(IOT, cfg()) and not bypasses(HOME, cfg()) and not bypasses(None, cfg())
    assert not bypasses(ROAMER, ModesConfig())  # no home PLMNs: nobody roams
    for imsi in (ROAMER, IOT):
        v, w = with_modes(listed(), IMEI, imsi, T0, cfg(), P.IMEI_PAIRED_ELSEWHERE)
        assert v.status is ES.WHITELISTED and v.reason.rule is Rule.POLICY and w == Write()


@pytest.mark.parametrize("broken", ["greylisted", "blacklisted"])
def test_a_broken_pairing_gets_its_verdict_in_every_mode(broken: str) -> None:
    for mode in ("permissive", "restrictive", "authorization"):
        c = cfg(mode, pairing=PairingConfig(enabled=True, broken=broken))  # type: ignore[arg-type]
        for result in (P.IMEI_PAIRED_ELSEWHERE, P.IMEI_FULL, P.IMSI_LOCKED_ELSEWHERE):
            v, _ = with_modes(listed(), IMEI, HOME, T0, c, result)
            assert v.status is (ES.GREYLISTED if broken == "greylisted" else ES.BLACKLISTED)
            assert v.reason.rule is Rule.PAIRING and v.reason.detail == result.value


def test_permissive_is_today_s_answer() -> None:
    for policy, status in ((UnknownPolicy.WHITELISTED, ES.WHITELISTED), (UnknownPolicy.UNKNOWN, None)):
        v, w = with_modes(listed(policy=policy), IMEI, HOME, T0, cfg("permissive"), P.NOT_PAIRED)
        assert v.status is status and v.reason.rule is Rule.POLICY and w == Write()


def test_restrictive_passes_the_registered_and_the_paired() -> None:
    v, w = with_modes(listed(ListKind.WHITE), IMEI, HOME, T0, cfg(), P.NOT_PAIRED)
    assert v.status is ES.WHITELISTED and v.reason.list == "white" and w == Write()
    v, _ = with_modes(listed(), IMEI, HOME, T0, cfg(), P.PAIRED)
    assert v.status is ES.WHITELISTED and v.reason.rule is Rule.PAIRING


def test_restrictive_gives_an_unregistered_device_its_grace_then_blocks_it() -> None:
    c = cfg(grace=GraceConfig(periods_days={"unregistered": 60}))
    v, w = with_modes(listed(), IMEI, HOME, T0, c, P.NOT_PAIRED)
    assert v.status is ES.GREYLISTED and v.reason.rule is Rule.GRACE and w.open_grace is GraceReason.UNREGISTERED
    g, _ = open_grace(IMEI, HOME, GraceReason.UNREGISTERED, T0, c.grace)
    v, w = with_modes(listed(), IMEI, HOME, T0 + 59 * DAY_S, c, P.NOT_PAIRED, g)
    assert v.status is ES.GREYLISTED and not w.events
    v, w = with_modes(listed(), IMEI, HOME, T0 + 60 * DAY_S, c, P.NOT_PAIRED, g)  # exactly at the deadline
    assert v.status is ES.BLACKLISTED and [e.kind for e in w.events] == ["blocked"] and "blocked" in v.reason.detail
    apply(g, "registered", T0 + 61 * DAY_S, c.grace, by="self-care")  # registered late: allowed
    v, w = with_modes(listed(), IMEI, HOME, T0 + 62 * DAY_S, c, P.NOT_PAIRED, g)
    assert v.status is ES.WHITELISTED and v.reason.rule is Rule.GRACE and not w.events


def test_amnesty_grandfathers_what_is_in_use_and_ends() -> None:
    c = cfg(amnesty=Amnesty(start=T0, end=T0 + 30 * DAY_S))
    v, w = with_modes(listed(), IMEI, HOME, T0 + DAY_S, c, P.NOT_PAIRED)
    assert v.status is ES.WHITELISTED and v.reason.source == "amnesty" and w.pair_origin == "amnesty"
    v, w = with_modes(listed(), IMEI, None, T0 + DAY_S, c)  # no IMSI: nothing to pair with
    assert v.status is ES.WHITELISTED and w.pair_origin is None
    v, w = with_modes(listed(), IMEI, HOME, T0 + 30 * DAY_S, c, P.NOT_PAIRED)  # a new device after the window
    assert v.reason.rule is Rule.GRACE and w.open_grace is GraceReason.UNREGISTERED


def test_authorization_pairs_a_device_seen_with_a_subscriber() -> None:
    v, w = with_modes(listed(), IMEI, HOME, T0, cfg("authorization"), P.NOT_PAIRED)
    assert v.status is ES.WHITELISTED and v.reason.rule is Rule.PAIRING and w.pair_origin == "auto"
    v, w = with_modes(listed(), IMEI, HOME, T0, cfg("authorization"), P.AUTO_PAIRED)
    assert v.status is ES.WHITELISTED and w == Write()
    v, w = with_modes(listed(), IMEI, None, T0, cfg("authorization"))  # without a subscriber: grace
    assert v.reason.rule is Rule.GRACE and w.open_grace is GraceReason.UNREGISTERED
