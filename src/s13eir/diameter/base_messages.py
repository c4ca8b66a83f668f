"""DWR/DWA and DPR/DPA (RFC 6733 §5.4, §5.5), with the AVPs in the order of their CCFs."""

from __future__ import annotations

from collections.abc import Iterable

from . import avp as avpcodec
from .capx import LocalIdentity
from .constants import (
    APP_BASE,
    AVP_DISCONNECT_CAUSE,
    AVP_ORIGIN_STATE_ID,
    AVP_RESULT_CODE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    FLAG_REQUEST,
    SUCCESS,
)
from .header import HEADER_LENGTH, Header, pack_header


def message(flags: int, command: int, hbh: int, e2e: int, avps: Iterable[bytes]) -> bytes:
    """A base-protocol message (Application-Id 0) from its encoded AVPs: ours, and the
    load generator's MMEs' (``loadgen.wire``)."""
    body = b"".join(avps)
    return pack_header(HEADER_LENGTH + len(body), flags, command, APP_BASE, hbh, e2e) + body


def dwa(request: Header, local: LocalIdentity) -> bytes:
    return message(0, CMD_DEVICE_WATCHDOG, request.hop_by_hop, request.end_to_end,
                   (avpcodec.u32(AVP_RESULT_CODE, SUCCESS), local.origin_avps,
                    avpcodec.u32(AVP_ORIGIN_STATE_ID, local.origin_state_id)))  # fmt: skip


def dpa(request: Header, local: LocalIdentity) -> bytes:
    return message(0, CMD_DISCONNECT_PEER, request.hop_by_hop, request.end_to_end,
                   (avpcodec.u32(AVP_RESULT_CODE, SUCCESS), local.origin_avps))  # fmt: skip


def dwr(local: LocalIdentity, hop_by_hop: int, end_to_end: int) -> bytes:
    return message(FLAG_REQUEST, CMD_DEVICE_WATCHDOG, hop_by_hop, end_to_end,
                   (local.origin_avps, avpcodec.u32(AVP_ORIGIN_STATE_ID, local.origin_state_id)))  # fmt: skip


def dpr(local: LocalIdentity, cause: int, hop_by_hop: int, end_to_end: int) -> bytes:
    return message(FLAG_REQUEST, CMD_DISCONNECT_PEER, hop_by_hop, end_to_end,
                   (local.origin_avps, avpcodec.u32(AVP_DISCONNECT_CAUSE, cause)))  # fmt: skip
