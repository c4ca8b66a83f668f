"""Values shared by the decision engine, the list stores and the interfaces.

Every verdict carries the reason it was reached (which list, which source, which
entry) so that logs and sighting events can say why a phone was refused.
"""

from __future__ import annotations

import enum

import msgspec


class EquipmentStatus(enum.IntEnum):
    """TS 29.272 Equipment-Status (AVP 1445). Rel-17 renamed the labels
    (PERMITTEDLISTED, PROHIBITEDLISTED, TRACKINGLISTED); the values are unchanged."""

    WHITELISTED = 0
    BLACKLISTED = 1
    GREYLISTED = 2


class ListKind(enum.Enum):
    """The lists an entry can belong to."""

    BLACK = "black"
    GREY = "grey"
    WHITE = "white"

    @property
    def status(self) -> EquipmentStatus:
        return _LIST_STATUS[self]


_LIST_STATUS = {
    ListKind.BLACK: EquipmentStatus.BLACKLISTED,
    ListKind.GREY: EquipmentStatus.GREYLISTED,
    ListKind.WHITE: EquipmentStatus.WHITELISTED,
}


class UnknownPolicy(enum.Enum):
    """What to answer for an IMEI on no list."""

    WHITELISTED = "whitelisted"  # permissive (default)
    GREYLISTED = "greylisted"
    UNKNOWN = "unknown"  # restrictive mode: DIAMETER_ERROR_EQUIPMENT_UNKNOWN (5422) / HTTP 404


class Rule(enum.Enum):
    """Which kind of rule produced a verdict, in precedence order."""

    EXCEPTION = "exception"  # IMEI+IMSI pair
    IMEI = "imei"  # single IMEI on a list
    RANGE = "range"  # IMEI range
    TAC = "tac"  # 8-digit Type Allocation Code
    POLICY = "policy"  # nothing matched: the unknown-IMEI policy
    MALFORMED = "malformed"  # the IMEI could not be read: the malformed-IMEI policy
    PAIRING = "pairing"  # a pairing broken (decision.modes)
    GRACE = "grace"  # restrictive modes: a grace period, its end, or the amnesty (decision.modes)
    IMSI_RANGE = "imsi_range"  # an IMSI range with its own verdict (decision.imsi_ranges)
    SOFTWARE_VERSION = "software_version"  # a TAC's firmware rule (decision.sv_rules)


class Reason(msgspec.Struct, frozen=True, gc=False):
    """Why a verdict was reached: rule kind, list, where the entry came from, which entry."""

    rule: Rule
    list: str  # "black" | "grey" | "white" | "exceptions" | "" (policy)
    source: str  # file path or feed name; "" for policy verdicts
    entry: str  # the matching entry: an IMEI, "imei/imsi", "from-to", a TAC, or the policy value
    detail: str = ""  # free text carried by the entry (the CEIR's reason column)


class Verdict(msgspec.Struct, frozen=True, gc=False):
    """The answer for one check. ``status`` None means EQUIPMENT_UNKNOWN."""

    status: EquipmentStatus | None
    reason: Reason


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One list entry as the engine sees it."""

    list: ListKind
    source: str
    key: str  # the entry as written: IMEI (14 digits), TAC, "from-to"
    detail: str = ""


class ExceptionEntry(msgspec.Struct, frozen=True, gc=False):
    """An IMEI+IMSI pair that overrides black and grey listing for that subscriber."""

    imei: str
    imsi: str
    source: str


class Facts(msgspec.Struct, frozen=True, gc=False):
    """Everything a store knows about one IMEI (and IMSI), gathered for the engine."""

    exception: ExceptionEntry | None = None
    imei: tuple[Entry, ...] = ()
    range: tuple[Entry, ...] = ()
    tac: tuple[Entry, ...] = ()


NO_FACTS = Facts()


class NeedRemote:
    """Returned by a store's ``facts`` when only a remote lookup can tell (a Bloom
    positive not in the local cache): the caller asks the store asynchronously."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOTE"


REMOTE = NeedRemote()
