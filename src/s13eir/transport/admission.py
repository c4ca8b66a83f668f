"""The I/O side of admission control: measures the node's connections for
``diameter.overload.OverloadControl`` once per event-loop lag sample, logs each change
of the reduction, and exports it as metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..observability.logs import get_logger
from ..overload import OverloadControl
from .tcp import DiameterProtocol


class AdmissionMonitor:
    def __init__(self, control: OverloadControl, connections: set[DiameterProtocol],
                 waiting: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.control = control
        self.connections = connections
        self.waiting = waiting  # how long the oldest request waiting for the store has waited
        self.log = get_logger("s13eir.overload")
        self._started: float | None = None
        self._refused_at_start = 0

    def on_lag(self, lag_s: float) -> None:
        in_flight = 0
        write_buffer = 0
        backlog = 0
        read = 0
        window_full = False
        for conn in self.connections:
            core = conn.core
            if core is not None:
                in_flight += core.in_flight
            write_buffer = max(write_buffer, conn.write_buffer_size())
            waiting, full = conn.input_backlog()
            backlog += waiting
            window_full = window_full or full
            read += conn.take_read()
        c = self.control
        before = c.reduction
        wait = self.waiting() if self.waiting is not None else 0.0
        if not c.sample(time.monotonic(), lag_s, in_flight, write_buffer, backlog, read, wait, window_full):
            return
        if before == 0:
            self._started, self._refused_at_start = time.monotonic(), c.refused
            action = "refusing that share of requests with 3004; DOIC peers asked to shed it"
            self.log.warning("overload_started", reduction=c.reduction, reason=c.reason, action=action)
        elif c.reduction == 0:
            took = time.monotonic() - self._started if self._started is not None else 0.0
            self.log.warning("overload_ended", duration_s=round(took, 3), peak=c.peak,
                             refused=c.refused - self._refused_at_start)  # fmt: skip
        else:
            self.log.info("overload_level", reduction=c.reduction, reason=c.reason or "recovering")

    def metrics(self) -> Iterable[Metric]:
        c = self.control
        yield GaugeMetricFamily("s13eir_overload_reduction_percent",
                                "Share of requests being shed: refused with 3004, or asked of DOIC peers (OC-OLR).",
                                value=c.reduction)  # fmt: skip
        yield CounterMetricFamily("s13eir_overload_refused", "Requests refused with 3004 by admission control.",
                                  value=c.refused)  # fmt: skip
        yield GaugeMetricFamily("s13eir_overload_delay_seconds",
                                "Queueing delay of a request arriving now, as last estimated: event-loop lag, "
                                "plus the bytes waiting to be read at the rate the node reads, plus the oldest "
                                "Redis lookup's wait.", value=c.delay)  # fmt: skip
        yield CounterMetricFamily("s13eir_overload_episodes", "Times the node became overloaded.", value=c.entered)
