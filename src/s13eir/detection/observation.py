"""What detection sees of one check, and where the peers are. Pure."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import msgspec

EARTH_RADIUS_KM = 6371.0088  # the IUGG mean radius


class Rat(enum.Enum):
    """The radio access a check came over, from the interface and the peer."""

    GERAN_UTRAN = "2g3g"  # S13' from an SGSN
    EUTRAN = "lte"  # S13 from an MME
    NR = "5g"  # N5g-eir from an AMF


@dataclass(frozen=True, slots=True)
class Location:
    """Where a peer serves: its MME/SGSN/AMF pool's region and a point in it."""

    region: str
    lat: float
    lon: float


def distance_km(a: Location, b: Location) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class PeerSite:
    """What detection knows of a peer: the radio access its checks come over, and where
    it serves (None: unknown, the time/distance rule skips it)."""

    rat: Rat
    location: Location | None


class Observation(msgspec.Struct, frozen=True):
    """One check, as the detection rules read it. ``t`` is epoch seconds (or trace
    seconds); ``imei15`` is the IMEI as sent when it was the 15-digit form with its
    check digit, for the Luhn rule. (A Struct: one is made per check, and a frozen
    dataclass's constructor costs several times more.)"""

    t: float
    imei14: str
    imsi: str | None
    peer: str
    rat: Rat
    sv: str | None = None
    imei15: str | None = None


@dataclass(frozen=True, slots=True)
class TacInfo:
    """What the GSMA TAC database says of a TAC that detection uses."""

    model: str
    device_type: str
    rats: frozenset[Rat]
