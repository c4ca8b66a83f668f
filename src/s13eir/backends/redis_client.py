"""Connecting to the Redis that holds the lists: single server, Sentinel or Cluster.

``store.redis.url`` forms:

* ``redis://[user:password@]host:port[/db]`` and ``rediss://...`` (TLS): one server.
* ``redis+sentinel://[user:password@]h1:p1,h2:p2/service[/db]`` (``rediss+sentinel://``
  for TLS to the master): the master of ``service`` as the Sentinels name it, found
  again after a failover. Sentinel port default 26379. The password is the master's;
  the Sentinels are asked without one.
* any of the first two with ``store.redis.cluster: true``: a Redis Cluster, the url
  naming one of its nodes.

Clients return ``bytes`` (``decode_responses=False``): IMEI fields and meta ids are
ASCII, and skipping the decode in redis-py keeps bulk reads cheap; callers decode
the few values they show.

What each deployment guarantees to the list writer (:mod:`s13eir.sync.writer`):

==============  ==============================================================
deployment      guarantee
==============  ==============================================================
single server   Everything the writer does per step is atomic: a change and
                its stream record are one Lua script (never one without the
                other), a generation flip and its stream record are one
                script, and both check the writer lock's token first.
Sentinel        As single server while the master lives. Replication is
                asynchronous, so a failover may lose the last writes the old
                master acknowledged: ``P:seq`` and the stream then go back.
                Nodes detect the sequence regression or gap and reload the
                current generations; the sync process re-imports its snapshots
                (the feed's ``P:feed:*`` seq went back too, so the feed
                re-delivers what was lost).
Cluster         A generation flip is one ``HSET`` on ``P:current`` and so
                atomic per list, but bucket writes, the stream and the
                pointers live in different slots: no transaction spans them.
                The writer logs first (``XADD``) and applies second, and
                :meth:`ListWriter.replay_unapplied` re-applies the stream's tail
                after a crash (changes are idempotent). Lua is not used for
                data (keys of one script must share a slot), so an import is
                slower (one command per row) and the writer lock is checked
                between batches rather than inside each write.
==============  ==============================================================
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from s13eir.config import RedisConfig
from s13eir.observability.redact import redact_url

__all__ = ["DEFAULT_SENTINEL_PORT", "AnyRedis", "SentinelUrl", "as_int", "as_text", "connect", "parse_sentinel_url"]

AnyRedis: TypeAlias = aioredis.Redis | RedisCluster
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


class SentinelUrl:
    """The parts of a ``redis+sentinel://`` url."""

    __slots__ = ("db", "hosts", "password", "service", "ssl", "username")

    def __init__(
        self,
        hosts: list[tuple[str, int]],
        service: str,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
    ) -> None:
        self.hosts = hosts
        self.service = service
        self.db = db
        self.username = username
        self.password = password
        self.ssl = ssl


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://[user:pw@]h1:p1,h2:p2/service[/db]``; ValueError if malformed.

    Parsed by hand: urllib cannot split a netloc holding several host:port pairs.
    """
    scheme = next((s for s in _SENTINEL_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"not a sentinel url: {redact_url(url)!r}")
    rest = url[len(scheme) :]
    rest, _, _query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user, sep, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if port and not port.isdigit():
            raise ValueError(f"sentinel url {redact_url(url)!r}: bad port in {item!r}")
        hosts.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
    if not hosts:
        raise ValueError(f"sentinel url {redact_url(url)!r} names no sentinel host")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError(f"sentinel url {redact_url(url)!r} names no service (…/service[/db])")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"sentinel url {redact_url(url)!r}: expected /service[/db] after the hosts")
    return SentinelUrl(
        hosts,
        unquote(parts[0]),
        int(parts[1]) if len(parts) == 2 else 0,
        username,
        password,
        scheme.startswith("rediss"),
    )


def connect(cfg: RedisConfig, *, timeout_s: float | None = None) -> AnyRedis:
    """A client for ``cfg`` (no I/O until the first command).

    ``timeout_s`` bounds each command's socket wait; the default is
    ``cfg.timeout_ms``, which suits a node's lookups. A writer passes a longer one:
    its pipelines and scripts carry thousands of rows.
    """
    timeout = cfg.timeout_ms / 1000 if timeout_s is None else timeout_s
    # Connecting may take a TLS handshake: never less than a second, whatever the lookup budget.
    opts: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": timeout,
        "socket_connect_timeout": max(timeout, 1.0),
    }
    url = cfg.url
    if url.startswith(_SENTINEL_SCHEMES):
        if cfg.cluster:
            raise ValueError("store.redis: a sentinel url cannot name a Redis Cluster (cluster: true)")
        s = parse_sentinel_url(url)
        sentinel = Sentinel(
            s.hosts,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": max(timeout, 1.0)},
            **opts,
        )
        master_opts: dict[str, Any] = {"db": s.db}
        if s.username:
            master_opts["username"] = s.username
        if s.password is not None:
            master_opts["password"] = s.password
        if s.ssl:
            master_opts["ssl"] = True
        client: aioredis.Redis = sentinel.master_for(s.service, **master_opts)
        return client
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"store.redis.url {redact_url(url)!r}: expected redis://, rediss:// or redis+sentinel://")
    if cfg.cluster:
        return RedisCluster.from_url(url, **opts)
    return aioredis.Redis.from_url(url, **opts)


def as_text(value: bytes | str | None) -> str:
    """A Redis reply as text ("" for none): the clients here do not decode replies."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def as_int(value: bytes | str | None) -> int | None:
    """A Redis reply as an integer (None for none or "")."""
    text = as_text(value)
    return int(text) if text else None
