"""Parse the ECR (TS 29.272 §7.2.19): the IMEI in Terminal-Information (with the IMEISV
read per ``policy.imeisv_in_imei``), the Software-Version, the IMSI in User-Name when it is
one, Session-Id and the origin. The request has already passed the base screening."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..decision.imei import normalize_imei
from ..decision.policy import Policy
from ..diameter import avp as avpcodec
from ..diameter.avp import Avp, decode_avps
from ..diameter.constants import (
    AVP_IMEI,
    AVP_SOFTWARE_VERSION,
    AVP_TERMINAL_INFORMATION,
    AVP_USER_NAME,
    MISSING_AVP,
    VENDOR_3GPP,
)
from .fastpath import FastEcr

__all__ = ["EcrQuery", "find", "query_of", "read_query"]


class EcrQuery(msgspec.Struct, frozen=True, gc=False):
    """What an ECR asks, once read."""

    session_id: str
    imei: str  # as received
    imei14: str | None  # the lookup key, None when malformed
    software_version: str | None
    imsi: str | None  # User-Name when it is a plausible IMSI
    origin_host: str
    origin_realm: str


def _digits(b: bytes) -> bool:
    return b.isdigit() and b.isascii()


def query_of(ecr: FastEcr) -> EcrQuery:
    """The query ``read_query`` would build, from what the scanner took (ASCII only)."""
    sv = ecr.software_version
    return EcrQuery(ecr.session_id.decode(), ecr.imei.decode(), ecr.imei14, None if sv is None else sv.decode(),
                    ecr.imsi, ecr.origin_host.decode(), ecr.origin_realm.decode())  # fmt: skip


def find(avps: Sequence[Avp], code: int, vendor: int = 0) -> Avp | None:
    for a in avps:
        if a.code == code and a.vendor == vendor:
            return a
    return None


def read_query(avps: Sequence[Avp], policy: Policy) -> EcrQuery | tuple[int, bytes | None, str]:
    """Read the ECR; an error is returned as (result code, Failed-AVP, text)."""
    ti = find(avps, AVP_TERMINAL_INFORMATION, VENDOR_3GPP)
    if ti is None:  # the grammar check normally catches this first
        return (
            MISSING_AVP,
            avpcodec.grouped(AVP_TERMINAL_INFORMATION, [], vendor=VENDOR_3GPP),
            "no Terminal-Information",
        )
    inner = decode_avps(ti.data)
    imei_avp = find(inner, AVP_IMEI, VENDOR_3GPP)
    if imei_avp is None:
        example = avpcodec.grouped(
            AVP_TERMINAL_INFORMATION, [avpcodec.utf8(AVP_IMEI, b"", vendor=VENDOR_3GPP)], vendor=VENDOR_3GPP
        )
        return MISSING_AVP, example, "no IMEI in Terminal-Information"
    raw = imei_avp.data
    sv_avp = find(inner, AVP_SOFTWARE_VERSION, VENDOR_3GPP)
    sv = sv_avp.data.decode("utf-8", "replace") if sv_avp is not None else None
    imei = raw.decode("utf-8", "replace")
    imei14 = normalize_imei(imei)
    if imei14 is None and len(raw) == 16 and _digits(raw) and (split := policy.split_imeisv(imei)):
        imei14 = split[0]
        sv = sv or split[1]
    user = find(avps, AVP_USER_NAME)
    imsi = None
    if user is not None and 5 <= len(user.data) <= 15 and _digits(user.data):
        imsi = user.data.decode()
    sid = find(avps, 263)
    host = find(avps, 264)
    realm = find(avps, 296)
    return EcrQuery(
        sid.data.decode("utf-8", "replace") if sid else "",
        imei,
        imei14,
        sv,
        imsi,
        host.data.decode("utf-8", "replace") if host else "",
        realm.data.decode("utf-8", "replace") if realm else "",
    )
