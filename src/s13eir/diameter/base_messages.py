"""DWR/DWA and DPR/DPA (RFC 6733 §5.4, §5.5), encoded with python-diameter."""

from __future__ import annotations

from diameter.message.commands import (
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
)

from .capx import LocalIdentity
from .constants import SUCCESS
from .header import Header


def _bytes(msg: object) -> bytes:
    data: bytes = msg.as_bytes()  # type: ignore[attr-defined]
    return data


def dwa(request: Header, local: LocalIdentity) -> bytes:
    msg = DeviceWatchdogAnswer()
    msg.header.hop_by_hop_identifier = request.hop_by_hop
    msg.header.end_to_end_identifier = request.end_to_end
    msg.result_code = SUCCESS
    msg.origin_host = local.origin_host.encode()
    msg.origin_realm = local.origin_realm.encode()
    msg.origin_state_id = local.origin_state_id
    return _bytes(msg)


def dpa(request: Header, local: LocalIdentity) -> bytes:
    msg = DisconnectPeerAnswer()
    msg.header.hop_by_hop_identifier = request.hop_by_hop
    msg.header.end_to_end_identifier = request.end_to_end
    msg.result_code = SUCCESS
    msg.origin_host = local.origin_host.encode()
    msg.origin_realm = local.origin_realm.encode()
    return _bytes(msg)


def dwr(local: LocalIdentity, hop_by_hop: int, end_to_end: int) -> bytes:
    msg = DeviceWatchdogRequest()
    msg.header.hop_by_hop_identifier = hop_by_hop
    msg.header.end_to_end_identifier = end_to_end
    msg.origin_host = local.origin_host.encode()
    msg.origin_realm = local.origin_realm.encode()
    msg.origin_state_id = local.origin_state_id
    return _bytes(msg)


def dpr(local: LocalIdentity, cause: int, hop_by_hop: int, end_to_end: int) -> bytes:
    msg = DisconnectPeerRequest()
    msg.header.hop_by_hop_identifier = hop_by_hop
    msg.header.end_to_end_identifier = end_to_end
    msg.origin_host = local.origin_host.encode()
    msg.origin_realm = local.origin_realm.encode()
    msg.disconnect_cause = cause
    return _bytes(msg)
