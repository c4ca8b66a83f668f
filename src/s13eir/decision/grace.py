"""Grace periods (ITU-T Q.5050, Q.Sup73): a device the rules would refuse is first told,
and refused only when its deadline passes. Pure, with time as an argument, so that a
60-day grace is tested in milliseconds.

One record per (IMEI, IMSI) and reason::

    seen --notified--> notified --registered/paired--> allowed
      |                   |
      +----- deadline ----+--> blocked --appeal--> appealed --deadline--> blocked
                                  |                    |
                                  +--restore/release---+--registered/restore/release--> allowed

* ``seen``: the device was met (an unregistered device in restrictive mode, a broken
  pairing, a clone before its block); the ``seen`` event carries what the operator's SMS
  gateway or self-care portal needs to tell the subscriber, and the deadline.
* ``notified``: the operator's adapter confirmed the notice went out.
* ``appealed``: the subscriber appealed; the deadline moves ``appeal_days`` past the
  later of now and the old deadline, and service goes on while an analyst decides.
* ``allowed``: registered, paired, restored (a recovered stolen phone, Q.5054) or
  released by the operator; the record no longer changes a verdict.
* ``blocked``: the deadline passed, exactly at it (``now >= deadline``).

Every transition is a :class:`GraceEvent` and a line of the record's history (bounded).
Until the deadline the device gets ``during`` (default greylisted: it works and is
tracked); once blocked, ``after`` (default blacklisted).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from .model import EquipmentStatus

DAY_S = 86400.0
MAX_HISTORY = 50


class GraceReason(enum.Enum):
    UNREGISTERED = "unregistered"  # restrictive mode: not on the white list (Pakistan: 60 days)
    PAIRING = "pairing"  # a pairing broken: a mismatched second IMEI (Turkey: 120 days)
    DUPLICATE = "duplicate"  # a cloned IMEI, before its block (Colombia: 15 days after the SMS)


class Stage(enum.Enum):
    SEEN = "seen"
    NOTIFIED = "notified"
    APPEALED = "appealed"
    ALLOWED = "allowed"
    BLOCKED = "blocked"


PENDING = frozenset({Stage.SEEN, Stage.NOTIFIED, Stage.APPEALED})  # a deadline runs

# The transitions an operation may make, by the stage it starts from.
_MOVES: dict[str, dict[Stage, Stage]] = {
    "notified": {Stage.SEEN: Stage.NOTIFIED},
    "registered": {s: Stage.ALLOWED for s in (Stage.SEEN, Stage.NOTIFIED, Stage.APPEALED, Stage.BLOCKED)},
    "appealed": {Stage.SEEN: Stage.APPEALED, Stage.NOTIFIED: Stage.APPEALED, Stage.BLOCKED: Stage.APPEALED},
    "restored": {Stage.BLOCKED: Stage.ALLOWED, Stage.APPEALED: Stage.ALLOWED},
    "released": {s: Stage.ALLOWED for s in (Stage.SEEN, Stage.NOTIFIED, Stage.APPEALED, Stage.BLOCKED)},
}


def _default_periods() -> dict[str, float]:
    return {"unregistered": 60.0, "pairing": 120.0, "duplicate": 15.0}


class GraceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Days from the first sighting to the block, per reason.
    periods_days: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(default_factory=_default_periods)
    appeal_days: Annotated[float, msgspec.Meta(ge=0)] = 14.0
    during: Literal["whitelisted", "greylisted"] = "greylisted"
    after: Literal["greylisted", "blacklisted"] = "blacklisted"

    def period_s(self, reason: GraceReason) -> float:
        return self.periods_days.get(reason.value, 30.0) * DAY_S


class GraceError(ValueError):
    """An operation the record's stage does not allow (appeal an allowed device...).
    ``events``: what the time that passed did to the record meanwhile (its expiry)."""

    def __init__(self, message: str, events: list[GraceEvent] | None = None) -> None:
        super().__init__(message)
        self.events = events or []


@dataclass(frozen=True, slots=True)
class GraceEvent:
    """One transition, as a notification adapter reads it."""

    kind: str  # seen, notified, appealed, registered, restored, released, blocked
    imei14: str
    imsi: str
    reason: GraceReason
    stage: Stage  # the stage entered
    deadline: float
    t: float
    by: str = ""
    note: str = ""


@dataclass
class Grace:
    imei14: str
    imsi: str
    reason: GraceReason
    stage: Stage
    opened: float
    deadline: float
    history: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, kind, stage, by)

    def _enter(self, kind: str, stage: Stage, t: float, by: str, note: str) -> GraceEvent:
        self.stage = stage
        self.history.append((t, kind, stage.value, by))
        del self.history[:-MAX_HISTORY]
        return GraceEvent(kind, self.imei14, self.imsi, self.reason, stage, self.deadline, t, by, note)


def open_grace(
    imei14: str, imsi: str, reason: GraceReason, now: float, config: GraceConfig
) -> tuple[Grace, GraceEvent]:
    """A device met for the first time for ``reason``: its record and the ``seen`` event."""
    g = Grace(imei14, imsi, reason, Stage.SEEN, now, now + config.period_s(reason))
    return g, g._enter("seen", Stage.SEEN, now, "", "")


def advance(g: Grace, now: float) -> GraceEvent | None:
    """The record at ``now``: blocked once its deadline has come (the ``blocked`` event)."""
    if g.stage in PENDING and now >= g.deadline:
        return g._enter("blocked", Stage.BLOCKED, max(now, g.deadline), "", "deadline passed")
    return None


def apply(g: Grace, kind: str, now: float, config: GraceConfig, by: str = "", note: str = "") -> list[GraceEvent]:
    """An operation on the record (``notified``, ``registered``, ``appealed``, ``restored``,
    ``released``) at ``now``, after the time that passed: the events, expiry first."""
    moves = _MOVES.get(kind)
    if moves is None:
        raise GraceError(f"{kind!r} is not a grace operation")
    events = [e for e in (advance(g, now),) if e is not None]
    target = moves.get(g.stage)
    if target is None:
        raise GraceError(f"{kind} is not possible once {g.stage.value}", events)
    if kind == "appealed":
        g.deadline = max(now, g.deadline) + config.appeal_days * DAY_S
    events.append(g._enter(kind, target, now, by, note))
    return events


def grace_status(g: Grace, now: float, config: GraceConfig) -> EquipmentStatus | None:
    """What the record makes of the verdict at ``now`` (None: nothing, it is allowed)."""
    if g.stage is Stage.ALLOWED:
        return None
    if g.stage is Stage.BLOCKED or now >= g.deadline:
        return EquipmentStatus.BLACKLISTED if config.after == "blacklisted" else EquipmentStatus.GREYLISTED
    return EquipmentStatus.GREYLISTED if config.during == "greylisted" else EquipmentStatus.WHITELISTED
