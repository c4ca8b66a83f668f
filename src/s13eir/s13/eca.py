"""Build the ECA (TS 29.272 §7.2.20): Result-Code 2001 with Equipment-Status, or
Experimental-Result 5422 in restrictive mode, in python-diameter's AVP order; from a
template for the common ECR (the header of the request, its Session-Id, and one body
per status built once per node), or from the request's AVPs when it carries Proxy-Info."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..decision.model import EquipmentStatus, Verdict
from ..diameter import avp as avpcodec
from ..diameter.answers import answer, proxy_info_avps, session_id_avp
from ..diameter.avp import Avp
from ..diameter.capx import LocalIdentity
from ..diameter.constants import (
    AUTH_SESSION_NO_STATE_MAINTAINED,
    AVP_AUTH_SESSION_STATE,
    AVP_EQUIPMENT_STATUS,
    AVP_EXPERIMENTAL_RESULT,
    AVP_EXPERIMENTAL_RESULT_CODE,
    AVP_RESULT_CODE,
    AVP_VENDOR_ID,
    CMD_ME_IDENTITY_CHECK,
    ERROR_EQUIPMENT_UNKNOWN,
    FLAG_PROXIABLE,
    SUCCESS,
    VENDOR_3GPP,
)
from ..diameter.header import Header

__all__ = ["AUTH_SESSION_STATE_AVP", "EcaBuilder"]

AUTH_SESSION_STATE_AVP = avpcodec.u32(AVP_AUTH_SESSION_STATE, AUTH_SESSION_NO_STATE_MAINTAINED)
_STATUS_AVPS = {s: avpcodec.u32(AVP_EQUIPMENT_STATUS, int(s), vendor=VENDOR_3GPP) for s in EquipmentStatus}
_SUCCESS_AVP = avpcodec.u32(AVP_RESULT_CODE, SUCCESS)
_UNKNOWN_AVP = avpcodec.grouped(
    AVP_EXPERIMENTAL_RESULT,
    [avpcodec.u32(AVP_VENDOR_ID, VENDOR_3GPP), avpcodec.u32(AVP_EXPERIMENTAL_RESULT_CODE, ERROR_EQUIPMENT_UNKNOWN)],
)
_ANSWER_HEAD = struct.Struct("!II")
_ECA_FLAGS_CODE = (FLAG_PROXIABLE << 24) | CMD_ME_IDENTITY_CHECK


class EcaBuilder:
    """The ECAs of one node (its Origin-Host and Origin-Realm in every answer)."""

    __slots__ = ("_bodies", "_tail")

    def __init__(self, local: LocalIdentity) -> None:
        self._tail = AUTH_SESSION_STATE_AVP + local.origin_avps
        # ECA bodies after Session-Id, indexed by Equipment-Status, the last for 5422 (no
        # status), in build's order. A tuple: hashing an IntEnum runs Python code.
        self._bodies: tuple[bytes, ...] = (
            *(_SUCCESS_AVP + self._tail + _STATUS_AVPS[s] for s in sorted(EquipmentStatus)),
            _UNKNOWN_AVP + self._tail,
        )

    def from_template(self, frame: bytes, session_id_avp: bytes, verdict: Verdict) -> bytes:
        status = verdict.status
        body = self._bodies[-1 if status is None else status]
        head = _ANSWER_HEAD.pack(0x01000000 | (20 + len(session_id_avp) + len(body)), _ECA_FLAGS_CODE)
        return b"".join((head, frame[8:20], session_id_avp, body))

    def build(self, header: Header, avps: Sequence[Avp], verdict: Verdict) -> bytes:
        """ECA in python-diameter's AVP order: Session-Id, Result-Code or Experimental-Result,
        Auth-Session-State, Origin-Host, Origin-Realm, Equipment-Status, Proxy-Info."""
        if verdict.status is None:
            body = session_id_avp(avps) + _UNKNOWN_AVP + self._tail + proxy_info_avps(avps)
        else:
            body = (
                session_id_avp(avps) + _SUCCESS_AVP + self._tail + _STATUS_AVPS[verdict.status] + proxy_info_avps(avps)
            )
        return answer(header, body)
