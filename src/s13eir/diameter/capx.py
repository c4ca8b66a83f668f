"""Capabilities exchange (RFC 6733 §5.3) as responder: CER in, CEA out.

The CER has already been framed and its AVPs decoded by the peer layer; the CEA is
encoded with our own AVP codec (python-diameter, which pulls in ``socket``, decodes it
in the tests as an independent check).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import avp as avpcodec
from .avp import Avp, decode_avps, read_u32
from .constants import (
    APP_BASE,
    APP_RELAY,
    APP_S13,
    AVP_ACCT_APPLICATION_ID,
    AVP_AUTH_APPLICATION_ID,
    AVP_ERROR_MESSAGE,
    AVP_FAILED_AVP,
    AVP_FIRMWARE_REVISION,
    AVP_HOST_IP_ADDRESS,
    AVP_INBAND_SECURITY_ID,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RESULT_CODE,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_VENDOR_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    CMD_CAPABILITIES_EXCHANGE,
    FLAG_ERROR,
    INBAND_SECURITY_NO_INBAND,
    NO_COMMON_APPLICATION,
    NO_COMMON_SECURITY,
    SUCCESS,
    UNKNOWN_PEER,
    VENDOR_3GPP,
    is_protocol_error,
)
from .dictionary import Dictionary
from .header import HEADER_LENGTH, Header, pack_header
from .validate import MAX_AVP_DEPTH, check_avps


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """Who we are, as told to peers in CEA, DWA and every answer."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[str, ...]
    vendor_id: int = 0
    product_name: str = "s13eir"
    firmware_revision: int = 100
    origin_state_id: int = 0
    applications: tuple[int, ...] = (APP_S13,)
    origin_avps: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "origin_avps",
            avpcodec.utf8(AVP_ORIGIN_HOST, self.origin_host) + avpcodec.utf8(AVP_ORIGIN_REALM, self.origin_realm),
        )


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A configured peer; ``addresses`` empty means any source address."""

    origin_host: str
    origin_realm: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    peers: Mapping[str, PeerEntry]  # keyed by lower-cased Origin-Host
    allow_unknown: bool = False

    @classmethod
    def of(cls, entries: Sequence[PeerEntry], allow_unknown: bool = False) -> PeerPolicy:
        return cls({e.origin_host.lower(): e for e in entries}, allow_unknown)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the peer told us in its CER."""

    origin_host: str
    origin_realm: str
    origin_state_id: int | None
    applications: frozenset[int]
    host_ip_addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CerOutcome:
    result_code: int
    cea: bytes
    peer: PeerInfo | None  # set when the CER could be read
    reason: str

    @property
    def accepted(self) -> bool:
        return self.result_code == SUCCESS


def _text(a: Avp) -> str:
    return a.data.decode("utf-8", "replace")


def read_peer_info(avps: Sequence[Avp]) -> PeerInfo:
    host = realm = ""
    state: int | None = None
    apps: set[int] = set()
    addrs: list[str] = []
    for a in avps:
        if a.vendor:
            continue
        if a.code == AVP_ORIGIN_HOST:
            host = _text(a)
        elif a.code == AVP_ORIGIN_REALM:
            realm = _text(a)
        elif a.code == AVP_ORIGIN_STATE_ID:
            state = read_u32(a.data)
        elif a.code in (AVP_AUTH_APPLICATION_ID, AVP_ACCT_APPLICATION_ID):
            apps.add(read_u32(a.data))
        elif a.code == AVP_VENDOR_SPECIFIC_APPLICATION_ID:
            # RFC 6733 §5.3: the Vendor-Id inside is ignored for the intersection.
            for inner in decode_avps(a.data):
                if inner.code in (AVP_AUTH_APPLICATION_ID, AVP_ACCT_APPLICATION_ID) and not inner.vendor:
                    apps.add(read_u32(inner.data))
        elif a.code == AVP_HOST_IP_ADDRESS:
            addrs.append(_address(a.data))
    return PeerInfo(host, realm, state, frozenset(apps), tuple(addrs))


def _address(data: bytes) -> str:
    family, raw = int.from_bytes(data[:2], "big"), data[2:]
    if family == 1 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if family == 2 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return raw.hex()


def _inband_security(avps: Sequence[Avp]) -> list[int]:
    return [read_u32(a.data) for a in avps if a.code == AVP_INBAND_SECURITY_ID and not a.vendor]


def process_cer(
    header: Header,
    avps: Sequence[Avp],
    local: LocalIdentity,
    policy: PeerPolicy,
    dictionary: Dictionary,
    remote_ip: str | None,
    max_depth: int = MAX_AVP_DEPTH,
) -> CerOutcome:
    """Decide on a CER and build the CEA (RFC 6733 §5.3.1, §5.3.2)."""
    command = dictionary.command(0, header.command_code)
    assert command is not None
    problem = check_avps(avps, command.request, dictionary, max_depth=max_depth)
    if problem is not None:
        cea = build_cea(header, local, problem.result_code, problem.message, problem.failed_avp)
        return CerOutcome(problem.result_code, cea, None, problem.message)
    info = read_peer_info(avps)
    code, reason = _admit(info, policy, remote_ip)
    if code == SUCCESS and not (info.applications & {*local.applications, APP_RELAY}):
        code, reason = NO_COMMON_APPLICATION, "the peer advertises no S13 application (16777252) and no relay"
    security = _inband_security(avps)
    if code == SUCCESS and security and INBAND_SECURITY_NO_INBAND not in security:
        code, reason = NO_COMMON_SECURITY, "in-band TLS is not offered by s13eir; use TLS on the transport"
    return CerOutcome(code, build_cea(header, local, code, reason if code != SUCCESS else ""), info, reason)


def admits(info: PeerInfo, policy: PeerPolicy, remote_ip: str | None) -> tuple[int, str]:
    """(result code, reason) of admitting ``info`` under ``policy``: 2001, or 3010 and why
    (also how a reload finds the open connections of peers it removed)."""
    return _admit(info, policy, remote_ip)


def _admit(info: PeerInfo, policy: PeerPolicy, remote_ip: str | None) -> tuple[int, str]:
    entry = policy.peers.get(info.origin_host.lower())
    if entry is None:
        if policy.allow_unknown:
            return SUCCESS, "unknown peer allowed by configuration"
        return UNKNOWN_PEER, f"Origin-Host {info.origin_host} is not a configured peer"
    if entry.origin_realm.lower() != info.origin_realm.lower():
        return UNKNOWN_PEER, f"Origin-Realm {info.origin_realm} does not match the configured {entry.origin_realm}"
    if entry.addresses and remote_ip is not None and not _address_allowed(remote_ip, entry.addresses):
        return UNKNOWN_PEER, f"connection from {remote_ip} is not an address configured for {info.origin_host}"
    return SUCCESS, ""


def _address_allowed(remote_ip: str, allowed: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for a in allowed:
        try:
            if ip in ipaddress.ip_network(a, strict=False):
                return True
        except ValueError:
            continue
    return False


def build_cea(
    request: Header, local: LocalIdentity, result_code: int, message: str = "", failed_avp: bytes | None = None
) -> bytes:
    """A CEA advertising S13 (TS 29.272 §7.1.8: Supported-Vendor-Id and the V-S-A-Id), in
    the AVP order of RFC 6733 §5.3.2."""
    avps = [avpcodec.u32(AVP_RESULT_CODE, result_code), local.origin_avps]
    avps += [avpcodec.address(AVP_HOST_IP_ADDRESS, ip) for ip in local.host_ip_addresses]
    avps += [
        avpcodec.u32(AVP_VENDOR_ID, local.vendor_id),
        avpcodec.utf8(AVP_PRODUCT_NAME, local.product_name, mandatory=False),
        avpcodec.u32(AVP_ORIGIN_STATE_ID, local.origin_state_id),
    ]
    if message:
        avps.append(avpcodec.utf8(AVP_ERROR_MESSAGE, message[:200], mandatory=False))
    if failed_avp is not None:
        avps.append(avpcodec.grouped(AVP_FAILED_AVP, [failed_avp]))
    avps.append(avpcodec.u32(AVP_SUPPORTED_VENDOR_ID, VENDOR_3GPP))
    avps += [
        avpcodec.grouped(AVP_VENDOR_SPECIFIC_APPLICATION_ID,
                         [avpcodec.u32(AVP_VENDOR_ID, VENDOR_3GPP), avpcodec.u32(AVP_AUTH_APPLICATION_ID, app)])
        for app in local.applications
    ]  # fmt: skip
    avps.append(avpcodec.u32(AVP_FIRMWARE_REVISION, local.firmware_revision, mandatory=False))
    body = b"".join(avps)
    flags = FLAG_ERROR if is_protocol_error(result_code) else 0
    return pack_header(HEADER_LENGTH + len(body), flags, CMD_CAPABILITIES_EXCHANGE, APP_BASE,
                       request.hop_by_hop, request.end_to_end) + body  # fmt: skip
