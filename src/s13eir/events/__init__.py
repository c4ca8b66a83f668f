"""Sighting events: one MQTT message whenever a black, grey or unknown phone tries to
attach (``sighting`` is the record and its JSON form, ``publisher`` the non-blocking
MQTT publisher)."""

from __future__ import annotations

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
