"""The S13 Diameter service of a node: what all its S13 connections share, built from the
configuration (the peer table, screening, timers, limits, the application and its fast
path). Erlang/OTP diameter calls this the service: the capabilities and applications its
transports are started with. Pure: the node passes in what it built with I/O."""

from __future__ import annotations

from ..config import Config, PeersConfig
from ..diameter.capx import LocalIdentity, PeerEntry, PeerPolicy
from ..diameter.constants import APP_S13
from ..diameter.dictionary import Dictionary
from ..diameter.doic import Reporter
from ..diameter.peer import FastPath, PeerRegistry, PeerSettings
from ..diameter.screening import Screening
from ..overload import OverloadControl
from .application import MeIdentityCheck
from .eca import AUTH_SESSION_STATE_AVP


def peer_policy(peers: PeersConfig) -> PeerPolicy:
    """Who may connect (RFC 6733 §5.3: the CER's Origin-Host, realm and address)."""
    return PeerPolicy.of(
        [PeerEntry(p.origin_host, p.origin_realm, tuple(p.addresses)) for p in peers.list], peers.allow_unknown
    )


def uses_fast_path(config: Config) -> bool:
    """The fast path logs nothing, so it only serves whitelisted answers that are not to be
    logged; it does not compare Destination-Realm, so it is off when that is checked."""
    return not (config.logging.log_whitelisted or config.policy.check_destination_realm)


def fast_paths(config: Config, app: MeIdentityCheck) -> dict[int, FastPath]:
    return {APP_S13: app.fast_answer} if uses_fast_path(config) else {}


def peer_settings(
    config: Config,
    local: LocalIdentity,
    dictionary: Dictionary,
    app: MeIdentityCheck,
    registry: PeerRegistry,
    overload: OverloadControl,
) -> PeerSettings:
    return PeerSettings(
        local=local,
        policy=peer_policy(config.peers),
        screening=Screening(
            dictionary=dictionary,
            origin_avps=local.origin_avps,
            origin_host=local.origin_host,
            origin_realm=local.origin_realm,
            applications=frozenset({APP_S13}),
            check_destination_realm=config.policy.check_destination_realm,
            answer_extras={APP_S13: AUTH_SESSION_STATE_AVP},
            max_avp_depth=config.diameter.max_avp_depth,
        ),
        applications={APP_S13: app},
        registry=registry,
        watchdog_interval=config.peers.watchdog_interval_s,
        cer_timeout=config.diameter.cer_timeout_s,
        dpa_timeout=config.diameter.dpa_timeout_s,
        max_message_size=config.diameter.max_message_size,
        fast_paths=fast_paths(config, app),
        max_in_flight=config.diameter.max_in_flight_per_peer,
        overload=overload,
        doic=Reporter(overload),
    )
