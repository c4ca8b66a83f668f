"""Configuration: the schema (the loader and ``S13EIR_*`` overrides: ``config_loading``).

Every section is a frozen msgspec Struct that forbids unknown keys, so a misspelt
key stops the start-up instead of being silently ignored. Validation runs with
``strict=False`` because YAML quoting and environment variables turn numbers and
booleans into strings ("3868", "true").
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Annotated, Literal

import msgspec

from s13eir.decision.model import ListKind, UnknownPolicy
from s13eir.decision.modes import ModesConfig
from s13eir.decision.policy import ImeisvInImeiPolicy, MalformedImeiPolicy, Policy, StoreUnavailablePolicy
from s13eir.detection.observation import Location, PeerSite, Rat
from s13eir.detection.rules import DetectionConfig
from s13eir.overload import OverloadSettings

__all__ = [
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "DiameterConfig",
    "ListFormat",
    "ListSourceConfig",
    "ListenConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "MetricsConfig",
    "NodeConfig",
    "NrfConfig",
    "OAuth2Config",
    "PeerConfig",
    "PeersConfig",
    "PolicyConfig",
    "SbiConfig",
    "StoreConfig",
    "Transport",
]

ENV_PREFIX = "S13EIR_"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
Unsigned32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]

Transport = Literal["tcp", "sctp"]
ListFormat = Literal["dirbs-blacklist", "dirbs-exceptions", "csv", "tac-csv", "range-csv", "rules-yaml"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is ``"<path>: <message>"``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """This EIR's Diameter identity, as sent in CEA and every answer."""

    origin_host: NonEmptyStr
    origin_realm: NonEmptyStr
    product_name: str = "s13eir"
    vendor_id: Unsigned32 = 0
    firmware_revision: Unsigned32 = 100
    host_ip_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Host-IP-Address is an Address AVP: a hostname here would only fail at CER time.
        for addr in self.host_ip_addresses:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"host_ip_addresses: {addr!r} is not an IP address") from None


class ListenConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    transport: Transport = "tcp"
    address: NonEmptyStr = "127.0.0.1"
    port: Port = 3868


class OverloadConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Admission control (overload.py): past any threshold, a share of requests
    is refused with 3004 and DOIC peers are asked (OC-OLR) to shed that share themselves."""

    enabled: bool = True
    # Queueing delay of a request arriving now (event-loop lag + unread bytes / read rate)
    delay_ms: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    in_flight: Annotated[int, msgspec.Meta(ge=1)] = 4096  # Redis lookups waiting, all peers
    write_buffer_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 << 20  # queued to one peer
    input_backlog_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 << 20  # received, not yet read, all peers
    sustain_samples: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2  # in a row before shedding
    step_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2  # per sample, coming back
    max_reduction_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100
    hold_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    validity_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 10  # OC-Validity-Duration

    def settings(self) -> OverloadSettings:
        """The section as the controller's settings (overload.py)."""
        return OverloadSettings(
            enabled=self.enabled, delay_s=self.delay_ms / 1000, in_flight=self.in_flight,
            write_buffer=self.write_buffer_bytes, input_backlog=self.input_backlog_bytes,
            sustain=self.sustain_samples, step=self.step_percent, max_reduction=self.max_reduction_percent,
            hold_s=self.hold_s, validity_s=self.validity_s,
        )  # fmt: skip


class DiameterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # The Message Length header field is 24 bits; below 1 KiB a CER with a few addresses may not fit.
    max_message_size: Annotated[int, msgspec.Meta(ge=1024, le=0xFFFFFF)] = 65536
    cer_timeout_s: Seconds = 10.0
    dpa_timeout_s: Seconds = 5.0
    # Extra dictionary files or directories (YAML, see dictionaries/README.md) loaded after
    # the shipped ones: how an operator adds vendor AVPs without touching code.
    dictionaries: tuple[str, ...] = ()
    # Requests of one peer waiting for a Redis lookup; past it, 3004 TOO_BUSY answers
    # (counted) instead of an unbounded queue.
    max_in_flight_per_peer: Annotated[int, msgspec.Meta(ge=1)] = 1024
    # Grouped AVPs nested deeper than this are refused (5004, Failed-AVP): S13 needs 3.
    max_avp_depth: Annotated[int, msgspec.Meta(ge=3, le=64)] = 16
    # Connections that have not completed CER, all together; past it a new one is closed
    # at once (0: no limit). Each costs at most cer_timeout_s and one max_message_size.
    max_pending_connections: Annotated[int, msgspec.Meta(ge=0)] = 64
    overload: OverloadConfig = msgspec.field(default_factory=OverloadConfig)


class LocationConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where a peer serves (its pool's region and a point in it), for detection's
    time/distance rule."""

    region: NonEmptyStr
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class PeerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    origin_host: NonEmptyStr
    origin_realm: NonEmptyStr
    addresses: tuple[str, ...] = ()
    # s13: an MME (LTE); s13prime: an SGSN (2G/3G). Detection reads the radio access from it.
    interface: Literal["s13", "s13prime"] = "s13"
    location: LocationConfig | None = None


class PeersConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    allow_unknown: bool = False
    # RFC 3539 §3.4.1: Tw must not be set below 6 seconds.
    watchdog_interval_s: Annotated[float, msgspec.Meta(ge=6)] = 30.0
    list: tuple[PeerConfig, ...] = ()

    def sites(self) -> dict[str, PeerSite]:
        """What detection knows of each peer, by Origin-Host in lower case."""
        return {
            p.origin_host.lower(): PeerSite(
                Rat.GERAN_UTRAN if p.interface == "s13prime" else Rat.EUTRAN,
                Location(p.location.region, p.location.lat, p.location.lon) if p.location is not None else None,
            )
            for p in self.list
        }


class PolicyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    unknown_imei: UnknownPolicy = UnknownPolicy.WHITELISTED
    malformed_imei: MalformedImeiPolicy = MalformedImeiPolicy.REJECT
    imeisv_in_imei: ImeisvInImeiPolicy = ImeisvInImeiPolicy.REJECT
    check_destination_realm: bool = False
    # Redis store only: how to answer an IMEI that the Bloom filter says may be listed
    # while Redis cannot be asked (or the store regressed). last_known: the last answer
    # confirmed from Redis for that IMEI (else greylisted); greylisted; bloom: the last
    # answer, else a blacklist Bloom positive is blacklisted (and the rest greylisted);
    # too_busy (3004: the MME tries another EIR); unable_to_comply (5012: the MME applies
    # its own policy). Never whitelisted for a black or grey Bloom positive. README: Outages.
    store_unavailable: StoreUnavailablePolicy = StoreUnavailablePolicy.LAST_KNOWN

    def decision_policy(self) -> Policy:
        """The section as the one policy S13 and N5g-eir both ask (decision/policy.py)."""
        return Policy(self.unknown_imei, self.malformed_imei, self.imeisv_in_imei, self.store_unavailable)


class ListSourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    path: NonEmptyStr
    format: ListFormat
    list: ListKind | None = None  # only for dirbs-blacklist, whose rows name no list


class RedisConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # redis://host:port/db, rediss:// for TLS, or redis+sentinel://host:port[,host:port]/service
    url: NonEmptyStr = "redis://127.0.0.1:6379/0"
    cluster: bool = False  # a Redis Cluster (url names one of its nodes)
    prefix: NonEmptyStr = "s13eir"
    timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 50  # per lookup round trip
    cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 100_000  # local cache of confirmed answers
    # Rebuild the Bloom filter when removals since it was built exceed this share of its entries.
    rebuild_after_removals: Annotated[float, msgspec.Meta(gt=0)] = 0.2


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    backend: Literal["embedded", "redis"] = "embedded"
    bloom_fp_rate: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.001
    lists: tuple[ListSourceConfig, ...] = ()
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)


class GuardsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # A snapshot whose size differs from the current generation's by more than this share
    # (either way), or that removes more than this share of it, is refused unless --force:
    # a truncated or wrong feed must not unblock or block millions of phones.
    max_size_change: Annotated[float, msgspec.Meta(ge=0)] = 0.10
    max_removals: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    min_entries_to_guard: Annotated[int, msgspec.Meta(ge=0)] = 100  # small lists change freely


class MqttSyncConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: NonEmptyStr = "mqtt://127.0.0.1:1883"  # mqtt:// or mqtts://, user:password@ allowed
    topic: NonEmptyStr = "ceir/changes"
    client_id: NonEmptyStr = "s13eir-sync"  # persistent session: the broker keeps QoS 1 messages for it
    feed: NonEmptyStr = "ceir"  # the name under which the feed's sequence number is kept
    # A change set whose seq is more than this beyond the last one applied is refused
    # (logged, counted, the baseline kept): one bad or hostile message must not move the
    # feed so far ahead that every genuine change set after it looks like a duplicate.
    max_seq_jump: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # mqtts:// only: PEM file of the CA that signed the broker's certificate (default:
    # the system's CAs). The host name in url is checked against the certificate.
    cafile: str | None = None


class SnapshotSourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    path: NonEmptyStr
    format: ListFormat
    list: Literal["black", "grey", "white", "exceptions", "rules"]


class SyncConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Full snapshots for `s13eir sync` to import at start and on a sequence gap (resync):
    # each {path, format, list}; list is one of black, grey, white, exceptions, rules.
    snapshots: tuple[SnapshotSourceConfig, ...] = ()
    guards: GuardsConfig = msgspec.field(default_factory=GuardsConfig)
    mqtt: MqttSyncConfig | None = None
    lock_ttl_s: Seconds = 10.0
    # /healthz, /readyz (503 while the feed is stalled or Redis is away) and /metrics of
    # `s13eir sync`; another port than the node's, so both can run on one host.
    metrics: MetricsConfig = msgspec.field(default_factory=lambda: MetricsConfig(port=9101))


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Sighting events: one MQTT message per black, grey or unknown verdict.
    url: NonEmptyStr = "mqtt://127.0.0.1:1883"
    topic_prefix: NonEmptyStr = "s13eir/sightings"
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # beyond it, events are dropped and counted
    mask_imsi: bool = False
    client_id: str = ""  # default: s13eir-<origin_host>
    cafile: str | None = None  # as sync.mqtt.cafile


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    level: LogLevel = "info"
    format: LogFormat = "json"
    log_whitelisted: bool = False
    # Mask every subscriber identifier in every log line and sighting event: IMSI, SUPI,
    # MSISDN/GPSI, and the IMSI of an exception-pair entry (events.mask_imsi: events only).
    mask_imsi: bool = False


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = True
    address: NonEmptyStr = "127.0.0.1"
    port: Port = 9100
    # Event-loop lag probe: a timer every this many ms, its lateness in
    # s13eir_event_loop_lag_seconds; 0 turns it off.
    loop_lag_interval_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 100


# --- N5g-eir (5G SBI, TS 29.511): see src/s13eir/sbi/README.md ---------------------------

JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"
]  # fmt: skip


class OAuth2Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Bearer-token check (TS 33.501 §13.4.1): NRF-issued JWTs with scope n5g-eir-eic."""

    enabled: bool = False
    algorithms: tuple[JwtAlgorithm, ...] = ("RS256", "ES256")
    secret: str | None = None  # HS* shared secret, inline
    key_file: str | None = None  # PEM public key (RS*/PS*/ES*), or a file holding the HS* secret
    audience: tuple[str, ...] = ()  # accepted "aud" values; () = "5G_EIR" and our nfInstanceId
    issuer: str | None = None  # required "iss" (the NRF's nfInstanceId), when set
    leeway_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if (self.secret is None) == (self.key_file is None):
            raise ValueError("oauth2: set exactly one of secret and key_file when enabled")
        if not self.algorithms:
            raise ValueError("oauth2: algorithms must not be empty")
        hmac = {a.startswith("HS") for a in self.algorithms}
        # One key for HMAC and public-key algorithms is the JWT algorithm-confusion attack.
        if len(hmac) > 1:
            raise ValueError("oauth2: algorithms must be all HS* or all public-key algorithms")
        if self.secret is not None and hmac != {True}:
            raise ValueError("oauth2: secret is only for HS* algorithms; use key_file for a public key")


class NrfConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """NF registration with an NRF (TS 29.510 Nnrf_NFManagement); off while url is null."""

    url: str | None = None  # the NRF's apiRoot, e.g. http://nrf.example:8000
    nf_instance_id: str | None = None  # UUID; null = derived from the node identity (stable)
    heartbeat_s: Annotated[int, msgspec.Meta(ge=1)] | None = None  # proposed; the NRF's heartBeatTimer wins
    timeout_s: Seconds = 5.0
    retry_max_s: Seconds = 60.0
    cafile: str | None = None  # CA bundle for an https NRF; null = the system's

    def __post_init__(self) -> None:
        if self.url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.url):
            raise ValueError(f"nrf.url: {self.url!r} is not an http:// or https:// URL")
        if self.nf_instance_id is not None:
            try:
                uuid.UUID(self.nf_instance_id)
            except ValueError:
                raise ValueError(f"nrf.nf_instance_id: {self.nf_instance_id!r} is not a UUID") from None


class SbiConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The N5g-eir_EquipmentIdentityCheck HTTP/2 server; absent = off."""

    address: NonEmptyStr = "127.0.0.1"
    port: Port = 8080
    tls: bool = False  # false: h2c with prior knowledge; true: TLS with ALPN h2
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None  # set: clients must present a certificate signed by these CAs
    fqdn: str | None = None  # advertised to the NRF (TS 29.500: https needs an FQDN)
    max_concurrent_streams: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 128
    max_header_list_size: Annotated[int, msgspec.Meta(ge=1024, le=65536)] = 8192  # 431 above
    max_uri_length: Annotated[int, msgspec.Meta(ge=256, le=65536)] = 2048  # 414 above
    idle_timeout_s: Seconds = 600.0
    oauth2: OAuth2Config = msgspec.field(default_factory=OAuth2Config)
    nrf: NrfConfig = msgspec.field(default_factory=NrfConfig)

    def __post_init__(self) -> None:
        if self.tls and not (self.certfile and self.keyfile):
            raise ValueError("sbi: tls: true needs certfile and keyfile")
        if not self.tls and self.cafile:
            raise ValueError("sbi: cafile (client certificates) needs tls: true")


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    node: NodeConfig
    listen: tuple[ListenConfig, ...] = (ListenConfig(),)
    diameter: DiameterConfig = msgspec.field(default_factory=DiameterConfig)
    peers: PeersConfig = msgspec.field(default_factory=PeersConfig)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    sbi: SbiConfig | None = None
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    events: EventsConfig | None = None  # off when absent
    detection: DetectionConfig = msgspec.field(default_factory=DetectionConfig)
    modes: ModesConfig = msgspec.field(default_factory=ModesConfig)

    @property
    def host_ip_addresses(self) -> tuple[str, ...]:
        """The Host-IP-Address values to advertise: ``node.host_ip_addresses`` if set, else
        the listen addresses that are concrete IPs (a wildcard such as 0.0.0.0 says nothing
        to a peer). May be empty: the caller then has to use the socket's local address."""
        if self.node.host_ip_addresses:
            return self.node.host_ip_addresses
        out: list[str] = []
        for listen in self.listen:
            try:
                ip = ipaddress.ip_address(listen.address)
            except ValueError:
                continue
            if not ip.is_unspecified and listen.address not in out:
                out.append(listen.address)
        return tuple(out)
