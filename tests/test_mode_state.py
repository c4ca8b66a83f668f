"""The node's mode state (mode_state.py): permissive mode with pairing leaves every
device without a pair or lock untouched, and refuses a broken pairing; grace records are
opened once and their events emitted."""

from __future__ import annotations

from s13eir.decision.engine import policy_verdict
from s13eir.decision.grace import GraceEvent
from s13eir.decision.model import EquipmentStatus as ES
from s13eir.decision.model import Rule, UnknownPolicy
from s13eir.decision.modes import ModesConfig
from s13eir.decision.pairing import PairingConfig
from s13eir.mode_state import ModeState, modes_active

IMEI, A, B = "35209900176148", "214010000000001", "214010000000002"
UNLISTED = policy_verdict(UnknownPolicy.WHITELISTED)


def test_permissive_pairing_touches_only_paired_devices() -> None:
    cfg = ModesConfig(pairing=PairingConfig(enabled=True, broken="blacklisted"))
    assert modes_active(cfg) and not modes_active(ModesConfig())
    state = ModeState(cfg)
    assert state.judge(UNLISTED, IMEI, A) is UNLISTED  # no pair, no lock: as it was
    state.pairings.pair(IMEI, A, "import", 0)
    assert state.judge(UNLISTED, IMEI, A) is UNLISTED
    broken = state.judge(UNLISTED, IMEI, B)
    assert broken.status is ES.BLACKLISTED and broken.reason.rule is Rule.PAIRING
    state.pairings.lock(B, "35450712345675", "operator", 0)  # B is a fixed SIM elsewhere
    assert state.judge(UNLISTED, "35290611000001", B).status is ES.BLACKLISTED


def test_a_grace_is_opened_once_and_its_events_emitted() -> None:
    events: list[GraceEvent] = []
    now = [1.8e9]
    state = ModeState(ModesConfig(mode="restrictive"), events.append, clock=lambda: now[0])
    assert state.judge(UNLISTED, IMEI, A).status is ES.GREYLISTED
    assert state.judge(UNLISTED, IMEI, A).status is ES.GREYLISTED
    assert [e.kind for e in events] == ["seen"] and len(state.graces) == 1
    now[0] += 60 * 86400
    assert state.judge(UNLISTED, IMEI, A).status is ES.BLACKLISTED
    assert [e.kind for e in events] == ["seen", "blocked"]
    assert state.judge(UNLISTED, IMEI, None).status is ES.GREYLISTED  # no IMSI: a record of its own
    assert len(state.graces) == 2
