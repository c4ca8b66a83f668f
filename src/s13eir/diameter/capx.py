"""Capabilities exchange (RFC 6733 §5.3) as responder: CER in, CEA out.

CEAs are encoded with python-diameter's command classes; the CER has already
been framed and its AVPs decoded by the peer layer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from diameter.message.avp import Avp as PdAvp
from diameter.message.avp.grouped import FailedAvp, VendorSpecificApplicationId
from diameter.message.commands import CapabilitiesExchangeAnswer

from . import avp as avpcodec
from .avp import Avp, decode_avps, read_u32
from .constants import (
    APP_RELAY,
    APP_S13,
    AVP_ACCT_APPLICATION_ID,
    AVP_AUTH_APPLICATION_ID,
    AVP_HOST_IP_ADDRESS,
    AVP_INBAND_SECURITY_ID,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    INBAND_SECURITY_NO_INBAND,
    NO_COMMON_APPLICATION,
    NO_COMMON_SECURITY,
    SUCCESS,
    UNKNOWN_PEER,
    VENDOR_3GPP,
    is_protocol_error,
)
from .dictionary import Dictionary
from .header import Header
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
    """A CEA advertising S13 (TS 29.272 §7.1.8: Supported-Vendor-Id and the V-S-A-Id)."""
    cea = CapabilitiesExchangeAnswer()
    cea.header.hop_by_hop_identifier = request.hop_by_hop
    cea.header.end_to_end_identifier = request.end_to_end
    cea.header.is_error = is_protocol_error(result_code)
    cea.result_code = result_code
    cea.origin_host = local.origin_host.encode()
    cea.origin_realm = local.origin_realm.encode()
    cea.host_ip_address = list(local.host_ip_addresses)
    cea.vendor_id = local.vendor_id
    cea.product_name = local.product_name
    cea.origin_state_id = local.origin_state_id
    if message:
        cea.error_message = message[:200]
    if failed_avp is not None:
        cea.failed_avp = FailedAvp(additional_avps=[PdAvp.from_bytes(failed_avp)])
    cea.supported_vendor_id = [VENDOR_3GPP]
    cea.vendor_specific_application_id = [
        VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=app) for app in local.applications
    ]
    cea.firmware_revision = local.firmware_revision
    data: bytes = cea.as_bytes()
    return data
