"""RFC 7683 DOIC, the reporting node's side: what a request announces, and the AVPs its
answer carries. Sans-IO.

A reacting node (an MME, an SGSN, a DRA) announces DOIC in every request with
OC-Supported-Features; the answer then carries OC-Supported-Features with the one
abatement algorithm chosen (the loss algorithm, OLR_DEFAULT_ALGO) and, while the node is
overloaded, an OC-OLR host report asking the peer to shed ``reduction`` percent of the
requests it would send here. A request that does not announce DOIC gets no DOIC AVP
(§5.2.3). The announcement travels end to end in application messages, not in CER/CEA,
so that it survives agents between the MME and the EIR (§5.1).

TS 29.272 names DOIC for S6a/S6d only; the ECR and ECA formats take it in ``*[AVP]``.
Every DOIC AVP is sent with the M-bit clear, so a peer without DOIC ignores it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..overload import OverloadControl
from . import avp as enc
from .avp import Avp, AvpLengthError, decode_avps
from .constants import (
    AVP_OC_FEATURE_VECTOR,
    AVP_OC_OLR,
    AVP_OC_REDUCTION_PERCENTAGE,
    AVP_OC_REPORT_TYPE,
    AVP_OC_SEQUENCE_NUMBER,
    AVP_OC_SUPPORTED_FEATURES,
    AVP_OC_VALIDITY_DURATION,
    HOST_REPORT,
    OLR_DEFAULT_ALGO,
)

_U64 = struct.Struct("!Q")


def announced(avps: Sequence[Avp]) -> int | None:
    """The feature vector of the request's OC-Supported-Features (absent inside: the loss
    algorithm only, §7.2), or None when the request does not announce DOIC."""
    for a in avps:
        if a.code == AVP_OC_SUPPORTED_FEATURES and a.vendor == 0:
            try:
                inner = decode_avps(a.data)
            except AvpLengthError:
                return None
            for c in inner:
                if c.code == AVP_OC_FEATURE_VECTOR and c.vendor == 0 and len(c.data) == 8:
                    return int(_U64.unpack(c.data)[0])
            return OLR_DEFAULT_ALGO
    return None


_SUPPORTED_FEATURES_CODE = b"\0\0\2\x6d"  # OC-Supported-Features, 621


def in_frame(frame: bytes) -> bool:
    """Whether a request announces DOIC: a walk of its top-level AVP headers only."""
    if _SUPPORTED_FEATURES_CODE not in frame:  # memchr-fast: most requests of most MMEs
        return False
    pos, end = 20, len(frame)
    while pos + 8 <= end:
        if frame[pos : pos + 4] == _SUPPORTED_FEATURES_CODE and not frame[pos + 4] & 0x80:  # 621, no vendor
            return True
        length = int.from_bytes(frame[pos + 5 : pos + 8], "big")
        if length < 8:
            return False
        pos += (length + 3) & ~3
    return False


def _u64(code: int, value: int) -> bytes:
    return enc.encode(code, _U64.pack(value), flags=0)


SUPPORTED_FEATURES = enc.grouped(AVP_OC_SUPPORTED_FEATURES, [_u64(AVP_OC_FEATURE_VECTOR, OLR_DEFAULT_ALGO)],
                                 mandatory=False)  # fmt: skip


def olr(sequence: int, reduction: int, validity_s: int) -> bytes:
    """An OC-OLR host report (§7.3)."""
    return enc.grouped(AVP_OC_OLR, [
        _u64(AVP_OC_SEQUENCE_NUMBER, sequence),
        enc.u32(AVP_OC_REPORT_TYPE, HOST_REPORT, mandatory=False),
        enc.u32(AVP_OC_REDUCTION_PERCENTAGE, reduction, mandatory=False),
        enc.u32(AVP_OC_VALIDITY_DURATION, validity_s, mandatory=False),
    ], mandatory=False)  # fmt: skip


class Reporter:
    """The DOIC AVPs for answers to announcing peers, rebuilt only when the report changes."""

    __slots__ = ("_avps", "_key", "control")

    def __init__(self, control: OverloadControl) -> None:
        self.control = control
        self._key: tuple[int, bool] | None = None
        self._avps = SUPPORTED_FEATURES

    def answer_avps(self, now: float) -> bytes:
        c = self.control
        key = (c.sequence, c.reporting(now))
        if key != self._key:
            self._key = key
            if key[1]:
                validity = c.settings.validity_s if c.reduction else 0  # 0: the overload is over
                self._avps = SUPPORTED_FEATURES + olr(c.sequence, c.reduction, validity)
            else:
                self._avps = SUPPORTED_FEATURES
        return self._avps


def with_avps(answer: bytes, avps: bytes) -> bytes:
    """``answer`` with ``avps`` appended and its header's length fixed."""
    length = len(answer) + len(avps)
    return answer[:1] + length.to_bytes(3, "big") + answer[4:] + avps
