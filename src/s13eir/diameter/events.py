"""What a PeerConnection reports to its owner. Frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

from .capx import PeerInfo


@dataclass(frozen=True, slots=True)
class PeerOpened:
    peer: PeerInfo
    displaced: object | None  # owner of an older connection from the same peer, to be closed


@dataclass(frozen=True, slots=True)
class PeerRejected:
    result_code: int  # 0 when the connection was closed without an answer
    reason: str
    origin_host: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A request answered with an error by the base protocol (not by the application)."""

    result_code: int
    command_code: int
    detail: str


@dataclass(frozen=True, slots=True)
class WatchdogChanged:
    state: str


Event = PeerOpened | PeerRejected | PeerClosed | ProtocolError | WatchdogChanged
