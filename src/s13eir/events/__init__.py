"""Sighting events: one MQTT message whenever a black, grey or unknown phone tries to
attach (``sighting`` is the record and its JSON form, ``publisher`` the non-blocking
MQTT publisher). The names below are imported on first use (PEP 562): the publisher
brings in aiomqtt, which a module that only needs ``sighting`` should not pay for."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .publisher import MqttEndpoint, SightingPublisher, parse_mqtt_url
    from .sighting import Sighting, decode_sighting, encode_sighting, sighting_from_outcome, sighting_topic

__all__ = [
    "MqttEndpoint",
    "Sighting",
    "SightingPublisher",
    "decode_sighting",
    "encode_sighting",
    "parse_mqtt_url",
    "sighting_from_outcome",
    "sighting_topic",
]

_LAZY = {
    "MqttEndpoint": ".publisher",
    "SightingPublisher": ".publisher",
    "parse_mqtt_url": ".publisher",
    "Sighting": ".sighting",
    "decode_sighting": ".sighting",
    "encode_sighting": ".sighting",
    "sighting_from_outcome": ".sighting",
    "sighting_topic": ".sighting",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
