"""Live list changes from the master list over MQTT, applied exactly once.

:class:`MqttFeed` subscribes with QoS 1 to ``sync.mqtt.topic`` in a persistent session
(``clean_session=False``, client id ``sync.mqtt.client_id``), so the broker keeps the
feed's messages while the sync process is away. Each message is one change set
(:mod:`s13eir.sync.changeset`, documented in ``config/mqtt-deltas.md``), handled in
order:

* not a valid change set: logged with the reason, counted in ``rejected``,
  acknowledged and skipped. Its ``seq`` is not stored, so the next message reveals a
  gap and a resync repairs whatever the bad message was meant to change.
* ``seq <= stored``: a duplicate (a redelivery after a crash or a reconnect, or a
  publisher's retry): counted, acknowledged, skipped.
* ``seq > stored + sync.mqtt.max_seq_jump``: implausible (a publisher bug, a replayed
  message from another feed, or a hostile one: ``"seq": 9000000000000000000``).
  Logged at error, counted, acknowledged and skipped; the baseline stays, so the
  genuine change sets that follow still apply. A feed with no baseline yet (new, or
  lost with Redis's data) counts from 0: a feed joined past ``max_seq_jump`` needs it
  raised for its first message.
* ``seq == stored + 1`` (or 1 on a feed that has never been applied): applied with
  ``writer.apply_changes(changes, feed=name, feed_seq=seq)``, which stores the seq
  with the changes.
* ``seq > stored + 1`` (or no stored seq and ``seq > 1``): a gap. Counted and logged,
  then ``resync()`` re-imports every configured snapshot, *with the guards*; the
  feed's seq is then set to ``seq - 1`` (the snapshot stands for everything before
  this message) and the message is applied. A resync that fails is retried with
  backoff; the message stays unacknowledged meanwhile and nothing after it is
  applied. A resync the guards refuse (:class:`ResyncRefused`: a snapshot older than
  the feed, truncated, or wrong) *stalls* the feed: the lists in force stay, the
  stall is logged at error and shown (``stalled``, ``/readyz`` and
  ``s13eir_sync_feed_stalled`` of the sync process), and the resync is tried again
  when an operator decides (``kill -USR1`` of ``s13eir sync``: the guards overridden
  once) or when the snapshot file or the list changes (a fresh export). A lost
  writer lock (``WriterLockLost``) is never retried: it ends :meth:`MqttFeed.run`.

Since the stored seq only grows, a message older than expected is always a duplicate:
reordering cannot apply anything twice or out of order (the broker keeps the order of
one publisher's QoS 1 messages on a topic; a feed has exactly one publisher).

Acknowledgement: the PUBACK is sent only after the change set is applied in Redis.
aiomqtt 2.x has no manual acknowledgement of its own, so the feed turns on that of
the paho-mqtt 2.x client inside it (``manual_ack_set(True)``, then ``ack(mid, qos)``).
A crash between the apply and the PUBACK makes the broker send the message again;
its seq is then ``<=`` the stored one and it is skipped: exactly once. Without manual
acknowledgement paho would acknowledge each message on receipt, and the messages
received but not yet applied when the process dies (aiomqtt queues them) would be
gone from the broker: QoS 1 + persistent session + seq would then only turn that loss
into a gap and a resync (tests/sync/test_mqtt_feed.py checks the redelivery).

A lost broker connection is retried with exponential backoff (bounded, logged); the
broker keeps the session's messages meanwhile. A Redis that cannot be reached is
retried the same way without acknowledging the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, TypeVar

import aiomqtt
import redis.exceptions as rx

from s13eir.backends.mqtt_url import parse_mqtt_url
from s13eir.config import MqttSyncConfig
from s13eir.lists.redis_layout import Change, k_feed
from s13eir.observability.logs import get_logger

from .changeset import ChangeSet, ChangeSetError, parse_changeset
from .lock import WriterLockLost

__all__ = [
    "TRANSIENT_REDIS_ERRORS",
    "FeedOutcome",
    "FeedStats",
    "FeedWriter",
    "MqttFeed",
    "ResyncRefused",
    "SeqStore",
    "read_feed_seq",
]

FeedOutcome = Literal["applied", "duplicate", "resynced", "rejected", "implausible"]


class ResyncRefused(Exception):
    """The guards refused a resync's snapshot(s): the lists stay as they are."""

    def __init__(self, lists: Sequence[str], detail: str) -> None:
        super().__init__(f"the guards refused the snapshot of {', '.join(lists)}: {detail}")
        self.lists = tuple(lists)


# Redis errors worth waiting out: the server is away, loading, failing over, or the cluster is moving slots.
TRANSIENT_REDIS_ERRORS: Final[tuple[type[Exception], ...]] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.ClusterDownError,
    rx.TryAgainError,
)

T = TypeVar("T")


class FeedWriter(Protocol):
    """What the feed needs of ``s13eir.sync.writer.ListWriter``."""

    async def apply_changes(self, changes: Sequence[Change], *, feed: str | None, feed_seq: int | None) -> int: ...


class SeqStore(Protocol):
    """What the feed needs of the Redis client (``redis.asyncio.Redis`` or ``RedisCluster``)."""

    def hget(self, name: str, key: str) -> Awaitable[Any]: ...


async def read_feed_seq(redis: SeqStore, prefix: str, feed: str) -> int | None:
    """The seq of the last change set applied from ``feed``, None if none ever was."""
    raw = await redis.hget(k_feed(prefix, feed), "seq")
    if raw is None:
        return None
    return int(raw.decode() if isinstance(raw, bytes) else raw)


@dataclass(slots=True)
class FeedStats:
    applied: int = 0  # change sets applied
    changes: int = 0  # individual changes in them
    duplicates: int = 0
    gaps: int = 0
    rejected: int = 0
    implausible: int = 0  # seq jumps beyond max_seq_jump, refused
    resyncs: int = 0  # successful resyncs
    resync_failures: int = 0
    resync_refusals: int = 0  # resyncs the guards refused (the feed stalled)
    reconnects: int = 0  # broker connections after the first
    redis_retries: int = 0
    last_seq: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


class MqttFeed:
    """Consume ``cfg.topic`` and apply its change sets through ``writer``. :meth:`run`
    runs until cancelled; :meth:`handle` is the per-message logic, usable on its own."""

    def __init__(
        self,
        cfg: MqttSyncConfig,
        writer: FeedWriter,
        redis: SeqStore,
        prefix: str,
        resync: Callable[[], Awaitable[object]],
        *,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        keepalive_s: int = 30,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.feed
        self.writer = writer
        self.redis = redis
        self.prefix = prefix
        self.resync = resync
        self.endpoint = parse_mqtt_url(cfg.url)
        self._client_kwargs = self.endpoint.client_kwargs(cfg.cafile)  # once: a TLS context reads the CA store
        self.stats = FeedStats()
        self.stalled = ""  # why the feed waits for an operator, "" while it flows
        self.retry_resync = asyncio.Event()  # set to retry a stalled resync at once
        self.subscribed = asyncio.Event()  # set while connected and subscribed
        self._backoff = (backoff_min_s, backoff_max_s)
        self._keepalive = keepalive_s
        self._log = get_logger("s13eir.sync.feed", feed=self.name)

    # -- per message ---------------------------------------------------------------------

    async def handle(self, payload: bytes, *, retained: bool = False) -> FeedOutcome:
        """Apply one message (see the module docstring). Returns what was done; the
        message may then be acknowledged. Raises only on cancellation or on an error
        that is neither a bad message nor a transient Redis failure."""
        if retained:
            self._log.warning("feed_retained_message", hint="the publisher should not set the retain flag")
        try:
            cs = parse_changeset(payload, feed=self.name)
        except ChangeSetError as exc:
            self.stats.rejected += 1
            self._log.error("feed_message_rejected", seq=exc.seq, reason=exc.reason, bytes=len(payload),
                            rejected=self.stats.rejected)  # fmt: skip
            return "rejected"
        stored = await self._retrying("read the feed seq", lambda: read_feed_seq(self.redis, self.prefix, self.name))
        expected = 1 if stored is None else stored + 1
        if cs.seq < expected:
            self.stats.duplicates += 1
            self._log.info("feed_duplicate", seq=cs.seq, stored=stored, duplicates=self.stats.duplicates)
            return "duplicate"
        if cs.seq - (stored or 0) > self.cfg.max_seq_jump:
            # Also without a baseline (a new feed, or a Redis that lost it): a first message
            # must not set the baseline anywhere it likes either.
            self.stats.implausible += 1
            hint = "" if stored is not None else "no baseline yet: raise sync.mqtt.max_seq_jump for a feed joined late"
            self._log.error("feed_seq_implausible", seq=cs.seq, stored=stored, max_seq_jump=self.cfg.max_seq_jump,
                            action="skipped; the baseline is kept", implausible=self.stats.implausible,
                            hint=hint)  # fmt: skip
            return "implausible"
        outcome: FeedOutcome = "applied"
        if cs.seq > expected:
            self.stats.gaps += 1
            self._log.warning("feed_gap", seq=cs.seq, expected=expected, stored=stored, gaps=self.stats.gaps,
                              action="resync from sync.snapshots")  # fmt: skip
            await self._resync(cs.seq)
            outcome = "resynced"
        await self._apply(cs)
        return outcome

    async def _resync(self, seq: int) -> None:
        delay, cap = self._backoff
        started = time.monotonic()
        while True:
            try:
                await self.resync()
                break
            except (asyncio.CancelledError, WriterLockLost):
                raise
            except ResyncRefused as exc:
                self.stats.resync_refusals += 1
                if not self.stalled:
                    self._log.error("feed_stalled", seq=seq, reason=str(exc), action="the lists in force stay",
                                    hint="check the snapshot files; an operator forces the resync with "
                                         "kill -USR1 <s13eir sync pid>, or a fresh export")  # fmt: skip
                self.stalled = f"resync after a gap before seq {seq} refused: {exc}"
                # Retried when an operator asks, else now and then (the resync skips
                # refused snapshots whose file and list have not changed: cheap).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.retry_resync.wait(), delay)
                self.retry_resync.clear()
                delay = min(delay * 2, cap)
                continue
            except Exception as exc:
                self.stats.resync_failures += 1
                self._log.error("feed_resync_failed", seq=seq, error=str(exc) or repr(exc), retry_in_s=delay,
                                failures=self.stats.resync_failures)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
        # An empty change set only stores the feed's seq (through the writer: fenced by its lock).
        await self._retrying(
            "set the feed baseline", lambda: self.writer.apply_changes((), feed=self.name, feed_seq=seq - 1)
        )
        if self.stalled:
            self._log.warning("feed_unstalled", after=self.stalled)
            self.stalled = ""
        self.stats.resyncs += 1
        self._log.warning("feed_resynced", baseline=seq - 1, next_seq=seq, seconds=round(time.monotonic() - started, 3),
                          resyncs=self.stats.resyncs)  # fmt: skip

    async def _apply(self, cs: ChangeSet) -> None:
        await self._retrying(
            f"apply change set {cs.seq}",
            lambda: self.writer.apply_changes(cs.changes, feed=self.name, feed_seq=cs.seq),
        )
        self.stats.applied += 1
        self.stats.changes += len(cs.changes)
        self.stats.last_seq = cs.seq
        lag = None
        if cs.sent_at is not None and cs.sent_at.tzinfo is not None:
            lag = round((datetime.now(UTC) - cs.sent_at).total_seconds(), 3)
        self._log.info("feed_applied", seq=cs.seq, changes=len(cs.changes), lag_s=lag, applied=self.stats.applied)

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        delay, cap = self._backoff
        while True:
            try:
                return await op()
            except TRANSIENT_REDIS_ERRORS as exc:
                self.stats.redis_retries += 1
                self._log.warning("feed_redis_unavailable", action=what, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)

    # -- the broker connection --------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            **self._client_kwargs,
            identifier=self.cfg.client_id,
            clean_session=False,  # the broker keeps our subscription and queues QoS 1 messages while we are away
            keepalive=self._keepalive,
            timeout=5,  # also the wait for CONNACK: a broker going down may accept and never answer
        )
        # aiomqtt 2.x has no manual acknowledgement of its own; its paho-mqtt 2.x client has:
        # PUBACK is then sent by ack() below, after the change set is in Redis.
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        """Consume the feed until cancelled, reconnecting with backoff."""
        delay, cap = self._backoff
        connections = 0
        failures = 0
        while True:
            try:
                async with self._client() as client:
                    connections += 1
                    if connections > 1:
                        self.stats.reconnects += 1
                    await client.subscribe(self.cfg.topic, qos=1)
                    self.subscribed.set()
                    self._log.info("feed_connected", broker=str(self.endpoint), topic=self.cfg.topic,
                                   client_id=self.cfg.client_id, after_failures=failures)  # fmt: skip
                    failures = 0
                    delay = self._backoff[0]
                    async for message in client.messages:
                        payload = message.payload
                        data = payload if isinstance(payload, bytes) else str(payload).encode()
                        await self.handle(data, retained=message.retain)
                        if message.qos > 0:
                            # After the apply only. On a connection that has gone, this does
                            # nothing: the broker sends the message again and it is a duplicate.
                            client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError as exc:
                failures += 1
                was_up = self.subscribed.is_set()
                self.subscribed.clear()
                log = self._log.warning if was_up or failures == 1 or failures % 10 == 0 else self._log.debug
                log("feed_broker_unavailable", broker=str(self.endpoint), error=str(exc), retry_in_s=delay,
                    failures=failures)  # fmt: skip
            finally:
                self.subscribed.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
