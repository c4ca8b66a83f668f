"""The detection rules a regulator tunes (ITU-T Q.5052), as the YAML's ``detection:``
section reads them. Pure.

Each rule has thresholds, a window and an action. Every default action is ``observe``
(a finding, a metric, a case: nothing changes for the subscriber) so that switching
detection on never locks anyone out; an operator moves a rule to ``notify``, ``greylist``
or ``block`` after tuning it on a trace (``s13eir detect``). The defaults are chosen so
that the legitimate look-alikes do not trip them; each rule says which ones.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=2)]
DAY_S = 86400.0


class Action(enum.Enum):
    OBSERVE = "observe"  # a finding, a metric and a case only
    NOTIFY = "notify"  # and an event to the fraud desk
    GREYLIST = "greylist"  # and the IMEI on the greylist, with the rule as the reason
    BLOCK = "block"  # and the IMEI on the blacklist


class _Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = True
    action: Action = Action.OBSERVE


class DistinctImsis(_Rule, frozen=True, kw_only=True):
    """Q.5052 §7.1.1, excessive subscriptions: at least ``threshold`` distinct IMSIs on
    one IMEI within ``window_days`` (DIRBS ``duplicate_threshold``). Look-alikes: SIM
    swaps, a second-hand sale, a traveller's local SIMs: a handful a month, well below 10."""

    threshold: Count = 10
    window_days: Positive = 30.0


class DailyAverage(_Rule, frozen=True, kw_only=True):
    """Q.5052 §7.1.2, the average threshold: distinct IMSIs per day the IMEI was seen,
    averaged over the days seen in ``period_days``, at least ``threshold`` over at least
    ``min_seen_days`` seen days (DIRBS ``duplicate_daily_avg``). One busy day of SIM tests
    in a shop does not make an average over five days."""

    threshold: Positive = 4.0
    min_seen_days: Annotated[int, msgspec.Meta(ge=1)] = 5
    period_days: Positive = 30.0


class TimeDistance(_Rule, frozen=True, kw_only=True):
    """Q.5052 §7.4: two sightings of one IMEI with different IMSIs whose serving peers are
    at least ``min_distance_km`` apart, closer in time than ``max_speed_kmh`` allows.
    Only different IMSIs count: a traveller who flies keeps the IMSI (and an airliner
    stays under 1,000 km/h); a SIM swapped before a flight is seen at a plausible speed.
    ``min_distance_km`` absorbs that a peer's location is its MME pool's, not the cell's."""

    max_speed_kmh: Positive = 1000.0
    min_distance_km: Annotated[float, msgspec.Meta(ge=0)] = 150.0
    window_hours: Positive = 24.0


class ConcurrentUse(_Rule, frozen=True, kw_only=True):
    """Two IMSIs active on one IMEI at once on different peers: IMSI A, then B, then A
    again, all within ``within_s`` seconds, A and B on different peers. The return to A
    is what a SIM swap never shows (the phone is off while its SIM changes)."""

    within_s: Positive = 300.0


class InvalidIdentifier(_Rule, frozen=True, kw_only=True):
    """Identifiers no genuine device carries (Q.5057: re-programmed IMEIs are often
    invalid): a wrong Luhn check digit in the 15-digit form (a 15th digit 0 is the spare
    digit TS 23.003 §6.2.1 puts in place of the check digit, and passes), a test TAC (3GPP TS 22.016 /
    DIRBS ``is_test_tac``: ``0010xx`` with xx 01-17, ``0044``, ``0086``, ``0091``), the
    unallocatable TAC 00000000, and IMEIs of one repeated digit."""

    luhn: bool = True
    test_tac: bool = True
    reserved: bool = True
    repeated_digits: bool = True


class UnexpectedTechnology(_Rule, frozen=True, kw_only=True):
    """Q.5052 §9.1: seen on a radio access its model cannot use, by the GSMA TAC
    database (DIRBS ``inconsistent_rat``). Off until a TAC database is configured."""


def _dirbs_delays() -> dict[str, float]:
    return {"00": 32, "01": 40, "35": 20, "86": 19, "91": 20, "99": 69}


class TacNotFound(_Rule, frozen=True, kw_only=True):
    """A TAC the GSMA database does not have (DIRBS ``gsma_not_found``), once it has been
    on the network longer than its reporting body's publication delay: a TAC is allocated
    weeks before the database carries it, so a new model is not a forgery. The delays
    (days, by the TAC's first two digits) are DIRBS's defaults. Off until a TAC database
    is given."""

    delay_days: dict[str, float] = msgspec.field(default_factory=_dirbs_delays)
    default_delay_days: Positive = 30.0


class SoftwareVersion(_Rule, frozen=True, kw_only=True):
    """Software versions worth a look: SVN 99, reserved by TS 23.003 §6.2.2, which no
    manufacturer assigns; and a downgrade, an IMEI seen with a lower SVN after a higher
    one, which over-the-air updates never do but re-flashing with another phone's
    identity does. A phone whose SVN goes up after an update trips nothing."""

    reserved_svn: bool = True
    downgrade: bool = True


class Rules(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    distinct_imsis: DistinctImsis = msgspec.field(default_factory=DistinctImsis)
    daily_average: DailyAverage = msgspec.field(default_factory=DailyAverage)
    time_distance: TimeDistance = msgspec.field(default_factory=TimeDistance)
    concurrent_use: ConcurrentUse = msgspec.field(default_factory=ConcurrentUse)
    invalid_identifier: InvalidIdentifier = msgspec.field(default_factory=InvalidIdentifier)
    unexpected_technology: UnexpectedTechnology = msgspec.field(default_factory=UnexpectedTechnology)
    tac_not_found: TacNotFound = msgspec.field(default_factory=TacNotFound)
    software_version: SoftwareVersion = msgspec.field(default_factory=SoftwareVersion)


class DetectionConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = False
    rules: Rules = msgspec.field(default_factory=Rules)
    # Per IMEI, at most this many recent sightings are kept for the pairwise rules.
    max_recent: Annotated[int, msgspec.Meta(ge=2, le=1024)] = 32
    # The rules run in a worker process beside each node process, so that they never take
    # the node's loop from answering; false: on the node's loop.
    worker: bool = True
    # The worker's CPU priority: "idle" (Linux SCHED_IDLE: it runs only on CPU time nothing
    # else wants, and the node preempts it the moment a request arrives), "low" (nice 10)
    # or "normal". On a saturated host the answers get the CPU first, and the checks
    # detection cannot keep up with are counted.
    worker_priority: Literal["idle", "low", "normal"] = "idle"
    # For a clone listed by greylist/block (time_distance, concurrent_use): "earliest"
    # gives the case's earliest IMSI an exception pair (Q.5052 §8), so that the owner
    # keeps service while the clones are refused; "none" lists the IMEI for everyone.
    genuine_owner: Literal["earliest", "none"] = "earliest"
    # notify: each such finding is published here (MQTT, the events broker).
    notify_topic: str = "s13eir/detection"
    # The GSMA TAC database (pipe-separated file) for the TAC rules and the device in
    # verdict lines, sighting events and cases. None: with store.backend redis the one
    # `s13eir tacs import` put there (re-read when a new one is imported), else none.
    tac_database: str | None = None
