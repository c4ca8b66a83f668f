"""Publishing sighting events to MQTT without ever delaying an answer.

:meth:`SightingPublisher.offer` appends to a bounded in-memory queue and wakes the
background task: no await, no I/O, no lock, whatever the broker is doing. The task
connects with aiomqtt, publishes each event with QoS 1 (not retained) and waits for
the broker's PUBACK; when the broker is away it reconnects with a bounded exponential
backoff and delivers what was queued once the broker is back.

Decisions:

* Queue full (``events.queue_size``): the OLDEST event is dropped and counted in
  ``dropped``. During a long outage the recent sightings are the actionable ones (the
  phone is attaching now), and a phone that keeps trying keeps producing new events.
* Delivery is at least once: an event whose PUBACK was lost with the connection is
  sent again after the reconnect with the same ``id``, so consumers de-duplicate on
  ``id``. Events still queued at :meth:`stop` past its timeout, or at a crash, are
  lost (counted in ``dropped`` at stop).
* A clean MQTT session: nothing is subscribed, and the broker has nothing to keep.
  Worker processes of one node must use distinct client ids (the broker disconnects
  the older of two clients with the same id).
* :meth:`offer` must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import aiomqtt

from s13eir.backends.mqtt_url import parse_mqtt_url
from s13eir.config import EventsConfig
from s13eir.observability.logs import get_logger
from s13eir.s13.application import Outcome
from s13eir.supervision import Supervisor

from .sighting import Interface, Sighting, encode_sighting, sighting_from_outcome, sighting_topic

__all__ = ["SightingPublisher"]


class SightingPublisher:
    """Publishes :class:`Sighting` events; counters ``published``, ``dropped`` and
    ``queued`` are plain ints for the metrics endpoint."""

    def __init__(
        self,
        cfg: EventsConfig,
        origin_host: str,
        *,
        client_id: str | None = None,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 5.0,
        publish_timeout_s: float = 5.0,
        window: int = 32,
        mask: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.origin_host = origin_host
        # The node passes logging.mask_imsi (one setting for logs and events); alone, this one's.
        self.mask = cfg.mask_imsi if mask is None else mask or cfg.mask_imsi
        self.endpoint = parse_mqtt_url(cfg.url)
        self._client_kwargs = self.endpoint.client_kwargs(cfg.cafile)  # once: a TLS context reads the CA store
        self.client_id = client_id or cfg.client_id or f"s13eir-{origin_host}"
        self.published = 0
        self.dropped = 0
        self.connected = False
        self._maxsize = cfg.queue_size
        self._queue: deque[Sighting | tuple[str, bytes]] = deque()
        # TAC -> the device (model, type, maker), from the TAC database: looked up when
        # the event is published, off the answer path.
        self.describe: Callable[[str], dict[str, str] | None] | None = None  # a sighting, or a (topic, payload) ready
        self._retry: deque[tuple[str, bytes]] = deque()  # encoded, sent once, not confirmed
        self._inflight = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = (backoff_min_s, backoff_max_s)
        self._publish_timeout = publish_timeout_s
        self._window = window
        self._log = get_logger("s13eir.sightings")

    # -- the answer path ----------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Events waiting for the broker (including those sent but not yet confirmed)."""
        return len(self._queue) + len(self._retry) + self._inflight

    def offer(self, sighting: Sighting | tuple[str, bytes]) -> bool:
        """Queue an event; never blocks, never awaits. False when the publisher is
        stopped (the event is dropped and counted). When the queue is full the oldest
        waiting event is dropped (counted) to make room."""
        if self._closing:
            self.dropped += 1
            return False
        if len(self._queue) + len(self._retry) >= self._maxsize:
            if self._retry:
                self._retry.popleft()
            else:
                self._queue.popleft()
            self.dropped += 1
        self._queue.append(sighting)
        self._wake.set()
        return True

    def offer_message(self, topic: str, payload: bytes) -> bool:
        """Queue a message of another kind (a detection finding) on the same connection,
        in the same bounded queue; as :meth:`offer`."""
        return self.offer((topic, payload))

    def offer_outcome(self, outcome: Outcome, interface: Interface = "s13") -> bool:
        """Offer the sighting of an answered check, if it is one (black, grey, unknown).
        False when there is nothing to publish or it was not accepted."""
        sighting = sighting_from_outcome(outcome, time.time(), interface)
        return sighting is not None and self.offer(sighting)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Publish in the background (restarted with backoff if it crashes; answers do
        not depend on it)."""
        if self._task is None:
            self._task = (supervisor or Supervisor()).start("sighting-publisher", self._run, critical=False)

    async def stop(self, timeout: float = 5.0) -> int:
        """Deliver what is queued within ``timeout`` seconds, then stop. Returns the
        number of events left undelivered (also added to ``dropped``)."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = self.queued
        if left:
            self.dropped += left
            self._log.warning("sightings_undelivered", count=left, broker=str(self.endpoint))
        self._queue.clear()
        self._retry.clear()
        self._inflight = 0
        self.connected = False
        return left

    # -- the background task --------------------------------------------------------------

    async def _run(self) -> None:
        delay, cap = self._backoff
        failures = 0
        while True:
            if self._closing and not self._queue and not self._retry:
                return
            try:
                async with aiomqtt.Client(
                    **self._client_kwargs, identifier=self.client_id, clean_session=True, timeout=5
                ) as client:
                    client.pending_calls_threshold = self._window + 10
                    self.connected = True
                    self._log.info("sightings_connected", broker=str(self.endpoint), queued=self.queued,
                                   after_failures=failures)  # fmt: skip
                    failures = 0
                    delay = self._backoff[0]
                    await self._drain(client)
                    return  # closing, and everything was delivered
            except aiomqtt.MqttError as exc:
                was_connected, self.connected = self.connected, False
                failures += 1
                if was_connected or failures == 1:
                    self._log.warning("sightings_broker_unavailable", broker=str(self.endpoint), error=str(exc),
                                      queued=self.queued, retry_in_s=delay)  # fmt: skip
                else:
                    self._log.debug("sightings_reconnect_failed", error=str(exc), retry_in_s=delay)
            except Exception as exc:  # a bug must not end publishing for the life of the node
                self.connected = False
                failures += 1
                self._log.exception("sightings_publisher_error", error=str(exc) or repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)

    def _next_batch(self) -> list[tuple[str, bytes]]:
        batch: list[tuple[str, bytes]] = []
        while self._retry and len(batch) < self._window:
            batch.append(self._retry.popleft())
        while self._queue and len(batch) < self._window:
            s = self._queue.popleft()
            if isinstance(s, tuple):
                batch.append(s)
                continue
            device = self.describe(s.imei[:8]) if self.describe is not None and s.imei else None
            payload = encode_sighting(s, eir=self.origin_host, mask=self.mask, event_id=uuid.uuid4().hex, device=device)
            batch.append((sighting_topic(self.cfg.topic_prefix, s.verdict), payload))
        return batch

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raises MqttError as soon as the connection drops (nothing is subscribed, so the
        message iterator yields nothing until then), instead of waiting for a PUBACK timeout."""
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("disconnected")

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish until closing with nothing left; raises MqttError when the connection fails."""
        watcher = asyncio.ensure_future(self._watch(client))
        try:
            while True:
                if watcher.done():
                    watcher.result()  # raises
                if not self._queue and not self._retry:
                    if self._closing:
                        return
                    self._wake.clear()
                    waker = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait((waker, watcher), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waker.cancel()
                    continue
                await self._publish_batch(client, watcher)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _publish_batch(self, client: aiomqtt.Client, watcher: asyncio.Future[None]) -> None:
        batch = self._next_batch()
        self._inflight = len(batch)
        tasks = [
            asyncio.ensure_future(client.publish(topic, payload, qos=1, timeout=self._publish_timeout))
            for topic, payload in batch
        ]
        try:
            pending: set[asyncio.Future[None]] = set(tasks)
            while pending and not watcher.done():
                done, pending = await asyncio.wait({*pending, watcher}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(watcher)
                if any(not t.cancelled() and t.exception() is not None for t in done if t is not watcher):
                    break
        finally:
            # Also on cancellation (stop's timeout): what was not confirmed stays queued.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._inflight = 0
            error = self._settle(batch, tasks)
        if watcher.done():
            watcher.result()  # the connection dropped: raises its MqttError
        if error is not None:
            if isinstance(error, aiomqtt.MqttError):
                raise error
            raise aiomqtt.MqttError(f"publish failed: {error!r}")

    def _settle(self, batch: list[tuple[str, bytes]], tasks: Sequence[asyncio.Future[None]]) -> BaseException | None:
        """Count the confirmed events; put the others back at the head, in order, to be
        sent again after the reconnect. Returns the first failure, if any."""
        error: BaseException | None = None
        unconfirmed: list[tuple[str, bytes]] = []
        for item, t in zip(batch, tasks, strict=True):
            exc = asyncio.CancelledError() if t.cancelled() else t.exception()
            if exc is None:
                self.published += 1
            else:
                unconfirmed.append(item)
                error = error or exc
        self._retry.extendleft(reversed(unconfirmed))
        while self._retry and len(self._queue) + len(self._retry) > self._maxsize:
            self._retry.popleft()
            self.dropped += 1
        return error
