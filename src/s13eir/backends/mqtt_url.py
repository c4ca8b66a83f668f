"""Where an MQTT broker is: ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``,
for the sightings publisher and the change feed alike."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["MqttEndpoint", "parse_mqtt_url"]

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where a broker is, from ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def client_kwargs(self, cafile: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` (hostname, port, credentials, TLS:
        the broker's certificate checked against ``cafile``, else the system's CAs)."""
        kw: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.username is not None:
            kw["username"] = self.username
            kw["password"] = self.password
        if self.tls:
            kw["tls_context"] = ssl.create_default_context(cafile=cafile)
        return kw

    def __str__(self) -> str:  # for logs: never the password
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Raises ValueError for a URL that names no usable broker."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r}: no host")
    return MqttEndpoint(
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme in ("mqtts", "ssl"),
    )
