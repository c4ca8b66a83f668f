"""An HTTP webhook for the grace events (``modes.webhook``): each event POSTed as JSON to
the operator's notification service (its SMSC adapter, a self-care portal), in order,
at least once.

Offering never blocks the answer: events wait in a bounded queue (beyond it the oldest
is dropped, counted). A POST answered 2xx is done; anything else (an error status, a
timeout, a refused connection) is retried with backoff (0.5 s doubling to 30 s), the
event kept at the head of the queue, so nothing is lost while the service is away.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .decision.modes import WebhookConfig
from .observability.redact import redact_url


class Webhook:
    def __init__(self, config: WebhookConfig, log: Any) -> None:
        self.config = config
        self.log = log
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.failures = 0

    def offer(self, payload: bytes) -> None:
        if len(self._queue) >= self.config.queue_size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(payload)
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (supervised)."""
        headers = {"content-type": "application/json"}
        if self.config.authorization:
            headers["authorization"] = self.config.authorization
        delay = 0.5
        async with httpx.AsyncClient(timeout=self.config.timeout_s, headers=headers) as client:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                payload = self._queue[0]
                try:
                    r = await client.post(self.config.url, content=payload)
                    ok = 200 <= r.status_code < 300
                    why = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    if self._queue and self._queue[0] is payload:
                        self._queue.popleft()
                    self.sent += 1
                    delay = 0.5
                    continue
                self.failures += 1
                self.log.warning("grace_webhook_failed", url=redact_url(self.config.url), error=why,
                                 queued=len(self._queue), retry_in_s=delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def metrics(self) -> Iterable[Metric]:
        sent = CounterMetricFamily("s13eir_grace_webhook_sent", "Grace events the webhook accepted")
        sent.add_metric([], self.sent)
        yield sent
        failed = CounterMetricFamily("s13eir_grace_webhook_failures", "Webhook POSTs that failed (retried)")
        failed.add_metric([], self.failures)
        yield failed
        dropped = CounterMetricFamily("s13eir_grace_webhook_dropped", "Grace events dropped: the queue was full")
        dropped.add_metric([], self.dropped)
        yield dropped
        queued = GaugeMetricFamily("s13eir_grace_webhook_queued", "Grace events waiting for the webhook")
        queued.add_metric([], len(self._queue))
        yield queued
