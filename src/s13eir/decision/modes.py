"""The operating modes of ITU-T Q.Sup73 over the lists' verdict: permissive (what is
listed is refused), restrictive (only registered devices pass, an unregistered one gets a
grace period first), authorization (restrictive, and a device seen with a subscriber is
paired within the rules), with an amnesty window at go-live, pairing both ways, and the
roamers and IMSI ranges that bypass them. Pure, time an argument, sans-IO: the caller
gives what its stores know (the lists' verdict, the pairing's answer, the grace record)
and gets the verdict and what to write back (:class:`Write`).

Precedence, first match wins (README: Operating modes):

1. an exception pair: WHITELISTED (the lists' own first rule);
2. black or grey on the lists (IMEI, range, TAC): that verdict; no mode unblocks a
   stolen phone; then a software-version rule of the TAC (``sv_rules``): its verdict;
3. a roamer (an IMSI outside ``home_plmns``), or an IMSI in a range with its own policy
   (``imsi_ranges``, ``bypass_imsi_prefixes``: IoT, test SIMs): the lists' verdict, as
   permissive, for ``bypass``, else the range's verdict;
4. a broken pairing: ``pairing.broken`` (greylisted or blacklisted), reason ``pairing``;
5. restrictive and authorization: a white-listed (registered) or paired device passes;
   in the amnesty window an unregistered one passes and is paired with the IMSI using it
   (grandfathered); in authorization mode one seen with a subscriber is paired and
   passes; otherwise it is in grace: ``grace.during`` until its deadline, ``grace.after``
   from it on (``decision.grace``), and an allowed record passes;
6. permissive: the lists' verdict (the unknown-IMEI policy for a device on no list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from .grace import Grace, GraceConfig, GraceEvent, GraceReason, advance, grace_status
from .imsi_ranges import ImsiRange, ImsiRanges
from .model import EquipmentStatus, ListKind, Reason, Rule, Verdict
from .pairing import PairingConfig, PairingResult
from .sv_rules import SvRule, SvRules

Mode = Literal["permissive", "restrictive", "authorization"]


class Amnesty(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    start: float  # epoch seconds
    end: float


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: str
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    authorization: str | None = None  # sent as the Authorization header (a bearer token...)


class ModesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    mode: Mode = "permissive"
    # The operator's own PLMNs as IMSI prefixes (MCC+MNC): any other IMSI is a roamer.
    # Empty: nobody is a roamer.
    home_plmns: tuple[str, ...] = ()
    bypass_imsi_prefixes: tuple[str, ...] = ()  # IoT, test SIMs: judged as in permissive mode
    # IMSI ranges with a policy of their own (decision.imsi_ranges): bypass (as
    # permissive), or a verdict (whitelisted, greylisted, blacklisted). No overlaps.
    imsi_ranges: tuple[ImsiRange, ...] = ()
    # Software-version rules per TAC (decision.sv_rules): a firmware's verdict.
    sv_rules: tuple[SvRule, ...] = ()
    amnesty: Amnesty | None = None
    pairing: PairingConfig = msgspec.field(default_factory=PairingConfig)
    grace: GraceConfig = msgspec.field(default_factory=GraceConfig)
    # Each grace transition is published here (MQTT, the events broker): what an SMS
    # gateway or a self-care portal needs to tell the subscriber.
    events_topic: str = "s13eir/grace"
    # A CSV file "imsi,msisdn" (the HLR/HSS export): the MSISDN goes into the events.
    msisdn_map: str | None = None
    # Each grace event also POSTed here as JSON, at least once (s13eir.webhook).
    webhook: WebhookConfig | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """State the verdict asks the caller to keep: a pair to make (amnesty, authorization),
    a grace record to open, or one that changed (its deadline passed)."""

    pair_origin: Literal["amnesty", "auto"] | None = None
    open_grace: GraceReason | None = None
    events: tuple[GraceEvent, ...] = ()  # what the time did to the grace record (its block)


NOTHING = Write()
_STATUS = {"greylisted": EquipmentStatus.GREYLISTED, "blacklisted": EquipmentStatus.BLACKLISTED,
           "whitelisted": EquipmentStatus.WHITELISTED}  # fmt: skip


def imsi_ranges(config: ModesConfig) -> ImsiRanges:
    """The configured ranges and bypass prefixes, indexed (raises ImsiRangeError)."""
    prefixes = (ImsiRange(prefix=p, name=f"bypass {p}") for p in config.bypass_imsi_prefixes)
    return ImsiRanges([*config.imsi_ranges, *prefixes])


def bypasses(imsi: str | None, config: ModesConfig) -> bool:
    """A roamer, or an IMSI in a bypass prefix: the modes do not apply."""
    if imsi is None:
        return False
    if config.home_plmns and not imsi.startswith(config.home_plmns):
        return True
    return bool(config.bypass_imsi_prefixes) and imsi.startswith(config.bypass_imsi_prefixes)


def with_modes(
    listed: Verdict,
    imei14: str,
    imsi: str | None,
    now: float,
    config: ModesConfig,
    pairing: PairingResult | None = None,
    grace: Grace | None = None,
    ranges: ImsiRanges | None = None,
    sv: str | None = None,
    sv_rules: SvRules | None = None,
) -> tuple[Verdict, Write]:
    """The verdict under the configured mode, from the lists' verdict ``listed`` (what
    ``decision.engine.decide`` gave), the pairing's answer for (IMEI, IMSI), the
    device's grace record, if any, and the IMSI ranges (``imsi_ranges(config)``, built
    once by the caller; without them, the bypass prefixes are looked up one by one)."""
    rule = listed.reason.rule
    if rule is Rule.EXCEPTION or listed.reason.list in (ListKind.BLACK.value, ListKind.GREY.value):
        return listed, NOTHING
    firmware = sv_rules.find(imei14, sv) if sv_rules is not None else None
    if firmware is not None:  # the device's software, whoever's SIM is in it
        reason = Reason(Rule.SOFTWARE_VERSION, "", "sv_rules", f"{firmware.tac}/{sv}", firmware.label)
        return Verdict(_STATUS[firmware.policy], reason), NOTHING
    if imsi is not None and config.home_plmns and not imsi.startswith(config.home_plmns):
        return listed, NOTHING  # a roamer
    if ranges is not None:
        found = ranges.find(imsi) if imsi is not None else None
        if found is not None:
            if found.policy == "bypass":
                return listed, NOTHING
            reason = Reason(Rule.IMSI_RANGE, "", "imsi_ranges", found.label, found.name)
            return Verdict(_STATUS[found.policy], reason), NOTHING
    elif bypasses(imsi, config):
        return listed, NOTHING
    if pairing is not None and pairing.breaks:
        status = _STATUS[config.pairing.broken]
        return Verdict(status, Reason(Rule.PAIRING, "", "pairing", f"{imei14}/{imsi}", pairing.value)), NOTHING
    if config.mode == "permissive":
        return listed, NOTHING
    if listed.reason.list == ListKind.WHITE.value:
        return listed, NOTHING  # registered
    if pairing in (PairingResult.PAIRED, PairingResult.AUTO_PAIRED):
        return Verdict(EquipmentStatus.WHITELISTED, Reason(Rule.PAIRING, "", "pairing", f"{imei14}/{imsi}",
                                                           pairing.value)), NOTHING  # fmt: skip
    a = config.amnesty
    if a is not None and a.start <= now < a.end:
        verdict = Verdict(EquipmentStatus.WHITELISTED, Reason(Rule.GRACE, "", "amnesty", imei14, "grandfathered"))
        return verdict, Write(pair_origin="amnesty" if imsi is not None else None)
    if config.mode == "authorization" and imsi is not None:
        # Seen with a subscriber: paired (the pairing's limits already had their say).
        verdict = Verdict(EquipmentStatus.WHITELISTED, Reason(Rule.PAIRING, "", "pairing", f"{imei14}/{imsi}",
                                                              "paired on first sight"))  # fmt: skip
        return verdict, Write(pair_origin="auto")
    if grace is None:
        days = config.grace.periods_days.get(GraceReason.UNREGISTERED.value, 30.0)
        reason = Reason(Rule.GRACE, "", "grace", imei14, f"unregistered: {days:g} days to register")
        return Verdict(_STATUS[config.grace.during], reason), Write(open_grace=GraceReason.UNREGISTERED)
    blocked = advance(grace, now)
    write = Write(events=(blocked,)) if blocked is not None else NOTHING
    in_grace = grace_status(grace, now, config.grace)
    if in_grace is None:
        return Verdict(EquipmentStatus.WHITELISTED, Reason(Rule.GRACE, "", "grace", imei14, grace.stage.value)), write
    detail = f"{grace.reason.value}: {grace.stage.value}, deadline {grace.deadline:.0f}"
    return Verdict(in_grace, Reason(Rule.GRACE, "", "grace", imei14, detail)), write
