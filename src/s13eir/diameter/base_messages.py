"""DWR/DWA and DPR/DPA (RFC 6733 §5.4, §5.5), with the AVPs in the order of their CCFs,
for either side of a connection: ``origin_avps`` is the sender's Origin-Host and
Origin-Realm, encoded once (``LocalIdentity.origin_avps`` for the node, the initiator's
``Messages`` for an MME)."""

from __future__ import annotations

from . import avp as avpcodec
from .constants import (
    AVP_DISCONNECT_CAUSE,
    AVP_ORIGIN_STATE_ID,
    AVP_RESULT_CODE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    FLAG_REQUEST,
    SUCCESS,
)
from .header import Header, base_message


def dwa(request: Header, origin_avps: bytes, origin_state_id: int) -> bytes:
    return base_message(0, CMD_DEVICE_WATCHDOG, request.hop_by_hop, request.end_to_end,
                        (avpcodec.u32(AVP_RESULT_CODE, SUCCESS), origin_avps,
                         avpcodec.u32(AVP_ORIGIN_STATE_ID, origin_state_id)))  # fmt: skip


def dpa(request: Header, origin_avps: bytes) -> bytes:
    return base_message(0, CMD_DISCONNECT_PEER, request.hop_by_hop, request.end_to_end,
                        (avpcodec.u32(AVP_RESULT_CODE, SUCCESS), origin_avps))  # fmt: skip


def dwr(origin_avps: bytes, origin_state_id: int, hop_by_hop: int, end_to_end: int) -> bytes:
    return base_message(FLAG_REQUEST, CMD_DEVICE_WATCHDOG, hop_by_hop, end_to_end,
                        (origin_avps, avpcodec.u32(AVP_ORIGIN_STATE_ID, origin_state_id)))  # fmt: skip


def dpr(origin_avps: bytes, cause: int, hop_by_hop: int, end_to_end: int) -> bytes:
    return base_message(FLAG_REQUEST, CMD_DISCONNECT_PEER, hop_by_hop, end_to_end,
                        (origin_avps, avpcodec.u32(AVP_DISCONNECT_CAUSE, cause)))  # fmt: skip
