"""Sighting events: a listed or unknown phone tried to attach. Pure.

A :class:`Sighting` is made on the answer path (cheap: no formatting, no I/O) and
encoded later by the publisher's background task. One MQTT message per sighting,
QoS 1, not retained, on topic ``<events.topic_prefix>/<verdict in lower case>``
(``s13eir/sightings/blacklisted``, ``.../greylisted``, ``.../equipment_unknown``).
The payload is a JSON object (UTF-8)::

    {"id": "5f0c…",                      # unique per event: consumers de-duplicate on it
     "time": "2024-05-01T12:00:00.123Z", # ISO 8601 UTC, millisecond precision
     "eir": "eir1.epc.example.org",      # the Origin-Host of the EIR that answered
     "interface": "s13",                 # s13 | n5g-eir
     "verdict": "BLACKLISTED",           # BLACKLISTED | GREYLISTED | WHITELISTED | EQUIPMENT_UNKNOWN
     "result_code": 2001,                # 2001, or 5422 for EQUIPMENT_UNKNOWN
     "imei": "35209900176148",           # as received (14 or 15 digits, or the malformed value)
     "imei14": "35209900176148",         # the lookup key; null when the IMEI was malformed
     "software_version": "01",           # or null
     "imsi": "001010123456789",          # or null; "00101********89" with logging.mask_imsi
     "origin_host": "mme1.epc.example.org",   # the MME's Origin-Host and Origin-Realm
     "origin_realm": "epc.example.org",
     "session_id": "mme1.epc.example.org;1;2",
     "reason": {"rule": "imei", "list": "black", "source": "ceir", "entry": "35209900176148",
                "detail": "stolen"}}

``reason`` is the verdict's :class:`~s13eir.decision.model.Reason`: ``rule`` one of
exception, imei, range, tac, policy, malformed; ``list`` black, grey, white, exceptions
or "" (policy); ``source`` the list file or feed; ``entry`` the matching entry; ``detail``
the entry's free text. Fields may be added (consumers must ignore unknown ones);
none will be removed or change meaning without a new topic prefix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from s13eir.decision.masking import mask_entry, mask_imsi
from s13eir.decision.model import EquipmentStatus, Reason, Verdict
from s13eir.s13.application import Outcome
from s13eir.s13.ecr import EcrQuery

__all__ = [
    "EQUIPMENT_UNKNOWN",
    "Interface",
    "Sighting",
    "SightingMessage",
    "SightingReason",
    "decode_sighting",
    "encode_sighting",
    "format_time",
    "make_sighting",
    "sighting_from_outcome",
    "sighting_topic",
    "to_message",
    "verdict_name",
]

Interface = Literal["s13", "n5g-eir"]
EQUIPMENT_UNKNOWN: Final = "EQUIPMENT_UNKNOWN"
_PUBLISHED: Final = frozenset({EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED})


@dataclass(frozen=True, slots=True)
class Sighting:
    """One answered check worth telling the fraud desk about. ``time`` is epoch seconds
    (the caller's ``now``); formatting waits until the event is published."""

    imei: str
    imei14: str | None
    imsi: str | None
    software_version: str | None
    origin_host: str
    origin_realm: str
    session_id: str
    interface: Interface
    time: float
    verdict: str  # BLACKLISTED | GREYLISTED | WHITELISTED | EQUIPMENT_UNKNOWN
    result_code: int
    reason: Reason


class SightingReason(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    list: str
    source: str
    entry: str
    detail: str = ""


class SightingMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The wire form (see the module docstring)."""

    id: str
    time: str
    eir: str
    interface: str
    verdict: str
    result_code: int
    imei: str
    imei14: str | None
    software_version: str | None
    imsi: str | None
    origin_host: str
    origin_realm: str
    session_id: str
    reason: SightingReason
    # From the GSMA TAC database, when the node has one: model, device_type, manufacturer.
    device: dict[str, str] | None = None


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(SightingMessage)


def verdict_name(verdict: Verdict) -> str:
    return verdict.status.name if verdict.status is not None else EQUIPMENT_UNKNOWN


def sighting_topic(topic_prefix: str, verdict: str) -> str:
    return f"{topic_prefix.rstrip('/')}/{verdict.lower()}"


def format_time(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sighting_from_outcome(
    outcome: Outcome, now: float, interface: Interface = "s13", *, include_white: bool = False
) -> Sighting | None:
    """The sighting for an answered ECR, or None when there is nothing to report: a
    whitelisted phone (unless ``include_white``), or an answer without a verdict (a
    malformed IMEI refused with 5004, the store unavailable and the request refused)."""
    verdict = outcome.verdict
    query = outcome.query
    if verdict is None or query is None:
        return None
    if not include_white and verdict.status is not None and verdict.status not in _PUBLISHED:
        return None
    return make_sighting(query, verdict, outcome.result_code, now, interface)


def make_sighting(query: EcrQuery, verdict: Verdict, result_code: int, now: float, interface: Interface) -> Sighting:
    return Sighting(
        imei=query.imei,
        imei14=query.imei14,
        imsi=query.imsi,
        software_version=query.software_version,
        origin_host=query.origin_host,
        origin_realm=query.origin_realm,
        session_id=query.session_id,
        interface=interface,
        time=now,
        verdict=verdict_name(verdict),
        result_code=result_code,
        reason=verdict.reason,
    )


def to_message(sighting: Sighting, *, eir: str, mask: bool = False, event_id: str | None = None,
               device: dict[str, str] | None = None) -> SightingMessage:  # fmt: skip
    r = sighting.reason
    return SightingMessage(
        id=event_id if event_id is not None else uuid.uuid4().hex,
        time=format_time(sighting.time),
        eir=eir,
        interface=sighting.interface,
        verdict=sighting.verdict,
        result_code=sighting.result_code,
        imei=sighting.imei,
        imei14=sighting.imei14,
        software_version=sighting.software_version,
        imsi=mask_imsi(sighting.imsi) if mask else sighting.imsi,
        origin_host=sighting.origin_host,
        origin_realm=sighting.origin_realm,
        session_id=sighting.session_id,
        reason=SightingReason(
            rule=r.rule.value,
            list=r.list,
            source=r.source,
            entry=mask_entry(r.rule.value, r.entry) if mask else r.entry,
            detail=r.detail,
        ),
        device=device,
    )


def encode_sighting(sighting: Sighting, *, eir: str, mask: bool = False, event_id: str | None = None,
                    device: dict[str, str] | None = None) -> bytes:  # fmt: skip
    """The JSON payload; ``event_id`` defaults to a random UUID (hex)."""
    return _encoder.encode(to_message(sighting, eir=eir, mask=mask, event_id=event_id, device=device))


def decode_sighting(payload: bytes | str) -> SightingMessage:
    """For consumers and tests; raises ``msgspec.DecodeError`` (or ValidationError)."""
    return _decoder.decode(payload)
