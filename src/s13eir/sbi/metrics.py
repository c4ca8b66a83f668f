"""N5g-eir counters, exported through the node's Prometheus registry at scrape time.

Same pattern as :mod:`s13eir.observability.metrics`: the request path increments plain
ints on an object owned by the event loop, and a collector turns them into families
when Prometheus asks. The families are separate from ``s13eir_answers_total`` because
those are labelled with Diameter result codes; ``equipment_status`` uses the same
values (whitelisted, blacklisted, greylisted, none) so the two can be summed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from s13eir.observability.metrics import Metrics
from s13eir.sbi.n5g_eir import SbiOutcome

__all__ = ["SbiMetrics"]


class SbiMetrics:
    """Counters for the N5g-eir server and the NRF client (single event loop: no locks)."""

    __slots__ = ("answers", "connection_errors", "connections_open", "connections_total", "nrf_registered",
                 "nrf_requests")  # fmt: skip

    def __init__(self) -> None:
        self.answers: dict[tuple[int, str, str], int] = {}  # (http status, equipment status, cause)
        self.connections_total = 0
        self.connections_open = 0
        self.connection_errors: dict[str, int] = {}  # kind -> count
        self.nrf_requests: dict[tuple[str, str], int] = {}  # (operation, outcome) -> count
        self.nrf_registered = 0

    def count_answer(self, outcome: SbiOutcome) -> None:
        v = outcome.verdict
        status = v.status.name.lower() if v is not None and v.status is not None else "none"
        key = (outcome.http_status, status, outcome.cause)
        self.answers[key] = self.answers.get(key, 0) + 1

    def count_connection_error(self, kind: str) -> None:
        self.connection_errors[kind] = self.connection_errors.get(kind, 0) + 1

    def count_nrf(self, operation: str, outcome: str) -> None:
        key = (operation, outcome)
        self.nrf_requests[key] = self.nrf_requests.get(key, 0) + 1

    def attach(self, metrics: Metrics) -> None:
        """Export these counters with the node's other metrics (its private registry)."""
        metrics.registry.register(_Collector(self))


class _Collector(Collector):
    def __init__(self, m: SbiMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[Metric]:
        m = self._m
        answers = CounterMetricFamily(
            "s13eir_sbi_answers",
            "N5g-eir EquipmentIdentityCheck answers, by HTTP status, equipment status and ProblemDetails cause.",
            labels=["http_status", "equipment_status", "cause"],
        )
        for (code, status, cause), n in sorted(m.answers.items()):
            answers.add_metric([str(code), status, cause], n)
        yield answers
        yield CounterMetricFamily("s13eir_sbi_connections", "HTTP/2 connections accepted.", value=m.connections_total)
        yield GaugeMetricFamily("s13eir_sbi_connections_open", "HTTP/2 connections open.", value=m.connections_open)
        errors = CounterMetricFamily(
            "s13eir_sbi_connection_errors",
            "HTTP/2 connections ended by an error, by kind (preface, http1, protocol, tls, idle).",
            labels=["kind"],
        )
        for kind, n in sorted(m.connection_errors.items()):
            errors.add_metric([kind], n)
        yield errors
        nrf = CounterMetricFamily(
            "s13eir_sbi_nrf_requests", "Requests to the NRF, by operation and outcome.", labels=["operation", "outcome"]
        )
        for (op, outcome), n in sorted(m.nrf_requests.items()):
            nrf.add_metric([op, outcome], n)
        yield nrf
        yield GaugeMetricFamily(
            "s13eir_sbi_nrf_registered", "1 while the NRF holds our NF profile as REGISTERED.", value=m.nrf_registered
        )
