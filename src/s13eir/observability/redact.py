"""Credentials out of what s13eir logs and prints.

``store.redis.url``, ``sync.mqtt.url`` and ``events.url`` may carry a password
(``redis://:secret@host``, ``mqtts://user:secret@broker``); every log line, error
message and report that names such a URL goes through :func:`redact_url` first.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_url"]

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (the user name is kept:
    it says which account, and is no secret). Anything unparsable is returned with
    whatever sits before an ``@`` replaced, so that a malformed URL leaks nothing."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        head, at, tail = url.rpartition("@")
        return f"{head.split('://', 1)[0]}://{REDACTED}@{tail}" if at else url
    if password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))
