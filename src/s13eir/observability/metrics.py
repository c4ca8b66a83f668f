"""Counters for the request path, exposed to Prometheus at scrape time.

prometheus_client's own Counter/Histogram take a lock and resolve label children on
every call; at tens of thousands of answers a second that is a visible share of the
budget. Here the hot path only does ``dict.get`` + store or ``list[i] += 1`` on a
``Metrics`` object owned by the event loop, and ``MetricsCollector`` turns the totals
into metric families when Prometheus asks.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from s13eir import __version__
from s13eir.decision.model import EquipmentStatus

from .loop_lag import LAG_BUCKETS, LoopLag

__all__ = ["BUILD_INFO", "LATENCY_BUCKETS", "NO_STATUS", "Metrics", "MetricsCollector", "render"]

# Upper bounds (seconds) of the answer latency buckets, 1-2-5 steps from 50 µs to 1 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    50e-6, 100e-6, 200e-6, 500e-6,
    1e-3, 2e-3, 5e-3,
    10e-3, 20e-3, 50e-3,
    0.1, 0.2, 0.5,
    1.0,
)  # fmt: skip

# s13eir_build_info's labels: which release and which Python a scraped process runs.
BUILD_INFO: tuple[tuple[str, str], ...] = (("version", __version__), ("python", platform.python_version()))

# ``status`` for an answer that carries no Equipment-Status (an error or EQUIPMENT_UNKNOWN).
NO_STATUS = -1

BloomSource = Callable[[], tuple[int, int, int]]
PeersSource = Callable[[], int]
ListsSource = Callable[[], Mapping[str, int]]
_T = TypeVar("_T")


class Metrics:
    """Plain counters, incremented directly by the request path (single event loop: no locks).

    Values owned elsewhere (Bloom filter statistics, peers up, list sizes) are read through
    callables registered with the ``set_*_source`` methods, at scrape time only.
    """

    __slots__ = (
        "_bloom_source",
        "_extra_sources",
        "_fast_whitelisted_source",
        "_lists_source",
        "_peers_source",
        "_registry",
        "answers",
        "connections_closed_error",
        "connections_refused",
        "connections_total",
        "latency_buckets",
        "latency_sum",
        "loop_lag",
        "protocol_errors",
        "reloads_failed",
        "reloads_ok",
        "reloads_refused",
        "requests_rejected_busy",
    )

    def __init__(self) -> None:
        self.answers: dict[tuple[int, int], int] = {}  # (result_code, equipment_status or -1)
        self.requests_rejected_busy = 0
        self.protocol_errors: dict[int, int] = {}  # result_code -> count
        # One slot per bound plus a last one for anything above 1 s (the +Inf bucket).
        self.latency_buckets: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.loop_lag = LoopLag()  # recorded by a LoopLagProbe when the node runs one
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.reloads_refused = 0  # refused by sync.guards (too big a change), not by a parse error
        self.connections_total = 0
        self.connections_refused = 0  # closed at once: too many connections awaiting CER
        self.connections_closed_error = 0
        self._bloom_source: BloomSource | None = None
        self._fast_whitelisted_source: Callable[[], int] | None = None
        self._peers_source: PeersSource | None = None
        self._lists_source: ListsSource | None = None
        self._registry: CollectorRegistry | None = None
        self._extra_sources: list[Callable[[], Iterable[Metric]]] = []

    def count_answer(self, result_code: int, status: int) -> None:
        """One answer sent; ``status`` is the Equipment-Status value or ``NO_STATUS``."""
        key = (result_code, status)
        answers = self.answers
        answers[key] = answers.get(key, 0) + 1

    def count_protocol_error(self, result_code: int) -> None:
        errors = self.protocol_errors
        errors[result_code] = errors.get(result_code, 0) + 1

    def observe_latency(self, seconds: float, answers: int = 1) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += answers
        self.latency_sum += seconds * answers

    @property
    def latency_count(self) -> int:
        return sum(self.latency_buckets)

    def set_fast_whitelisted_source(self, fn: Callable[[], int]) -> None:
        """``fn()`` returns the whitelisted answers (2001, WHITELISTED) counted outside
        ``count_answer``, by the fast path."""
        self._fast_whitelisted_source = fn

    def answers_total(self) -> dict[tuple[int, int], int]:
        """Answers by (Result-Code, Equipment-Status or NO_STATUS), both sources together."""
        out = dict(self.answers)
        fast = _read(self._fast_whitelisted_source)
        if fast:
            out[(2001, 0)] = out.get((2001, 0), 0) + fast
        return out

    def set_bloom_source(self, fn: BloomSource) -> None:
        """``fn()`` returns (positives, negatives, false_positives) since start."""
        self._bloom_source = fn

    def set_peers_source(self, fn: PeersSource) -> None:
        """``fn()`` returns the number of peers in the open state."""
        self._peers_source = fn

    def add_source(self, fn: Callable[[], Iterable[Metric]]) -> None:
        """``fn()`` yields metric families of another component (store, events), at scrape time."""
        self._extra_sources.append(fn)

    def set_lists_source(self, fn: ListsSource) -> None:
        """``fn()`` returns entries per list name ("black", "grey", ...)."""
        self._lists_source = fn

    @property
    def registry(self) -> CollectorRegistry:
        """A private registry (never the global one, so that several instances, e.g. in
        tests, do not collide) holding this object's collector and the process metrics."""
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(MetricsCollector(self))
            ProcessCollector(registry=registry)
            self._registry = registry
        return self._registry


def _status_label(status: int) -> str:
    if status == NO_STATUS:
        return "none"
    try:
        return EquipmentStatus(status).name.lower()
    except ValueError:
        return str(status)


class MetricsCollector(Collector):
    """Builds the metric families from a ``Metrics`` object at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m

        yield build_info()

        answers = CounterMetricFamily(
            "s13eir_answers",
            "ME-Identity-Check answers sent, by Result-Code and Equipment-Status.",
            labels=["result_code", "equipment_status"],
        )
        for (code, status), n in sorted(m.answers_total().items()):
            answers.add_metric([str(code), _status_label(status)], n)
        yield answers

        yield _histogram(
            "s13eir_answer_latency_seconds",
            "Time from the read of a request to its answer being queued, one observation per answer "
            "given at once (answers waiting for a Redis lookup are not in it).",
            LATENCY_BUCKETS,
            m.latency_buckets,
            m.latency_sum,
        )
        yield _histogram(
            "s13eir_event_loop_lag_seconds",
            "How late a periodic timer fired: the event loop was held (busy, or the process not running).",
            LAG_BUCKETS,
            m.loop_lag.buckets,
            m.loop_lag.sum,
        )

        errors = CounterMetricFamily(
            "s13eir_protocol_errors",
            "Diameter protocol errors answered, by Result-Code.",
            labels=["result_code"],
        )
        for code, n in sorted(m.protocol_errors.items()):
            errors.add_metric([str(code)], n)
        yield errors

        yield CounterMetricFamily(
            "s13eir_busy_answers",
            "Requests refused with DIAMETER_TOO_BUSY (3004) because a peer had too many in flight.",
            value=m.requests_rejected_busy,
        )

        reloads = CounterMetricFamily("s13eir_list_reloads", "List reloads, by outcome.", labels=["outcome"])
        reloads.add_metric(["ok"], m.reloads_ok)
        reloads.add_metric(["failed"], m.reloads_failed)
        reloads.add_metric(["refused"], m.reloads_refused)
        yield reloads

        yield CounterMetricFamily("s13eir_connections", "Diameter connections accepted.", value=m.connections_total)
        yield CounterMetricFamily("s13eir_connections_refused",
                                  "Connections closed at once: diameter.max_pending_connections awaiting CER.",
                                  value=m.connections_refused)  # fmt: skip
        yield CounterMetricFamily(
            "s13eir_connections_closed_error",
            "Diameter connections closed because of an error.",
            value=m.connections_closed_error,
        )

        # The sources belong to other components: one that fails must not take the whole
        # scrape down, so its families are left out of this scrape.
        peers = _read(m._peers_source)
        if peers is not None:
            yield GaugeMetricFamily("s13eir_peers_up", "Diameter peers in the open state.", value=peers)

        bloom = _read(m._bloom_source)
        if bloom is not None:
            positives, negatives, false_positives = bloom
            yield CounterMetricFamily(
                "s13eir_bloom_positives", "Bloom filter lookups that said maybe.", value=positives
            )
            yield CounterMetricFamily("s13eir_bloom_negatives", "Bloom filter lookups that said no.", value=negatives)
            yield CounterMetricFamily(
                "s13eir_bloom_false_positives",
                "Bloom filter maybes that the exact lookup then found absent.",
                value=false_positives,
            )

        lists = _read(m._lists_source)
        if lists is not None:
            entries = GaugeMetricFamily("s13eir_list_entries", "Entries loaded, by list.", labels=["list"])
            for name, n in sorted(lists.items()):
                entries.add_metric([name], n)
            yield entries

        for source in m._extra_sources:
            families = _read(lambda src=source: list(src()))  # type: ignore[misc]
            if families is not None:
                yield from families


def _histogram(name: str, doc: str, bounds: Sequence[float], counts: Sequence[int], total: float) -> Metric:
    """A histogram family from per-bucket counts (one more count than bounds: +Inf)."""
    cumulative: list[tuple[str, float]] = []
    n = 0
    for bound, count in zip(bounds, counts, strict=False):
        n += count
        cumulative.append((repr(bound), n))  # "5e-05", "0.001", "1.0"
    cumulative.append(("+Inf", n + counts[-1]))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


def _read(source: Callable[[], _T] | None) -> _T | None:
    if source is None:
        return None
    try:
        return source()
    except Exception:
        return None


class SourceMetrics:
    """The metrics of a process that is not a node (``s13eir sync``): build info, the
    process metrics and the families its sources yield at scrape time."""

    def __init__(self, *sources: Callable[[], Iterable[Metric]]) -> None:
        self._sources = list(sources)
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_SourcesCollector(self._sources))
            ProcessCollector(registry=registry)
            self._registry = registry
        return self._registry


class _SourcesCollector(Collector):
    def __init__(self, sources: list[Callable[[], Iterable[Metric]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        yield build_info()
        for source in self._sources:
            yield from source()


def build_info() -> GaugeMetricFamily:
    info = GaugeMetricFamily(
        "s13eir_build_info",
        "Always 1; the labels say which s13eir version and Python version this process runs.",
        labels=[name for name, _ in BUILD_INFO],
    )
    info.add_metric([value for _, value in BUILD_INFO], 1)
    return info


def render(metrics: Metrics | SourceMetrics) -> bytes:
    """The Prometheus text exposition format (version 0.0.4) of everything in the registry."""
    return generate_latest(metrics.registry)
