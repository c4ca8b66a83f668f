"""RFC 7683 DOIC, the reacting node's side, as a simulated MME runs it: the reports an
EIR sends (OC-OLR, read from answers) and the loss algorithm (§5.5.1: of the requests it
would send, drop the reduction percentage while the report is valid). Pure.

A real MME applies its local policy to an abated identity check (typically admits the
UE without it); the load generator counts it as ``abated`` and sends nothing."""

from __future__ import annotations

import struct

from s13eir.diameter import doic as diameter_doic
from s13eir.diameter.constants import (
    AVP_OC_OLR,
    AVP_OC_REDUCTION_PERCENTAGE,
    AVP_OC_SEQUENCE_NUMBER,
    AVP_OC_VALIDITY_DURATION,
)

_AVP = struct.Struct("!II")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
DEFAULT_VALIDITY_S = 30  # §7.4: absent, or above 86400

# What every ECR of a DOIC-speaking MME carries: the EIR's own encoding (M-bit clear).
SUPPORTED_FEATURES = diameter_doic.SUPPORTED_FEATURES

Report = tuple[int, int, int]  # (OC-Sequence-Number, OC-Reduction-Percentage, OC-Validity-Duration)


def scan_olr(buf: bytes | bytearray, p: int, end: int) -> Report | None:
    """The OC-OLR among the AVPs in ``buf[p:end]``, or None."""
    while end - p >= 8:
        code, fl = _AVP.unpack_from(buf, p)
        length = fl & 0xFFFFFF
        if length < 8 or p + length > end:
            return None
        if code == AVP_OC_OLR and not fl & 0x80000000:
            return _olr(buf, p + 8, p + length)
        p += (length + 3) & ~3
    return None


def _olr(buf: bytes | bytearray, p: int, end: int) -> Report | None:
    seq = -1
    reduction = 0
    validity = DEFAULT_VALIDITY_S
    while end - p >= 8:
        code, fl = _AVP.unpack_from(buf, p)
        length = fl & 0xFFFFFF
        if length < 8 or p + length > end or fl & 0x80000000:
            return None
        if code == AVP_OC_SEQUENCE_NUMBER and length == 16:
            seq = _U64.unpack_from(buf, p + 8)[0]
        elif code == AVP_OC_REDUCTION_PERCENTAGE and length == 12:
            reduction = _U32.unpack_from(buf, p + 8)[0]
        elif code == AVP_OC_VALIDITY_DURATION and length == 12:
            v = _U32.unpack_from(buf, p + 8)[0]
            validity = v if v <= 86400 else DEFAULT_VALIDITY_S
        p += (length + 3) & ~3
    if seq < 0 or reduction > 100:  # §7.7: a reduction above 100 is ignored
        return None
    return seq, reduction, validity


class Abatement:
    """One EIR's overload report as this MME holds it, and the loss algorithm."""

    __slots__ = ("_acc", "abated", "reduction", "reports", "sequence", "until_ns")

    def __init__(self) -> None:
        self.sequence = -1
        self.reduction = 0
        self.until_ns = 0
        self.reports = 0  # new reports taken
        self.abated = 0
        self._acc = 0

    def update(self, report: Report, now_ns: int) -> None:
        seq, reduction, validity = report
        if seq <= self.sequence:
            return  # §5.5.1: a report no newer than the one held changes nothing
        self.sequence = seq
        self.reports += 1
        self.reduction = reduction if validity else 0  # validity 0: the overload is over
        self.until_ns = now_ns + validity * 1_000_000_000

    def abate(self, now_ns: int) -> bool:
        """Whether to drop this request: ``reduction`` of every 100 while the report holds."""
        if not self.reduction:
            return False
        if now_ns >= self.until_ns:
            self.reduction = 0
            return False
        self._acc += self.reduction
        if self._acc >= 100:
            self._acc -= 100
            self.abated += 1
            return True
        return False
