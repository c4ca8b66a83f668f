from __future__ import annotations

import asyncio
import io
import json
import logging
import platform
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from s13eir import __version__
from s13eir.config_loading import config_from_mapping
from s13eir.decision.masking import mask_imsi
from s13eir.observability import http
from s13eir.observability.http import start_http
from s13eir.observability.logs import configure_logging, get_logger, set_level
from s13eir.observability.loop_lag import LAG_BUCKETS, LoopLag, LoopLagProbe
from s13eir.observability.metrics import LATENCY_BUCKETS, NO_STATUS, Metrics, render

# --- logs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("imsi", "masked"),
    [
        ("001010123456789", "00101********89"),
        ("31041012345678", "31041*******78"),
        ("12345678", "12345*78"),
        ("1234567", "*******"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_imsi(imsi: str | None, masked: str | None) -> None:
    assert mask_imsi(imsi) == masked


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("reset_structlog")
def test_json_logging_filters_and_stamps_utc() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    log = get_logger("s13eir.test")
    assert type(log).__name__.startswith("BoundLoggerFiltering")  # concrete, not the lazy proxy
    log.debug("dropped")
    log.info("answer", imei="35209900176148", reason=ValueError("why"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "answer"
    assert event["logger"] == "s13eir.test"
    assert event["level"] == "info"
    assert event["reason"] == "why"
    assert event["timestamp"].endswith("Z")
    assert log.is_enabled_for(logging.INFO) and not log.is_enabled_for(logging.DEBUG)


@pytest.mark.usefixtures("reset_structlog")
def test_set_level_moves_the_loggers_already_handed_out() -> None:
    """SIGHUP's logging.level: loggers taken at start (with their bindings) follow."""
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log = get_logger("s13eir.test", feed="ceir")
    log.info("dropped")
    set_level("debug")
    log.debug("kept", n=1)
    assert log.is_enabled_for(logging.DEBUG)
    set_level("error")
    log.warning("dropped too")
    log.error("kept too")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["feed"]) for e in events] == [("kept", "ceir"), ("kept too", "ceir")]
    with pytest.raises(ValueError):
        set_level("loud")


@pytest.mark.usefixtures("reset_structlog")
def test_json_logging_exception_has_no_locals() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    secret = "001010123456789"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").exception("failed")
    event = json.loads(out.getvalue())
    assert event["exception"][0]["exc_type"] == "RuntimeError"
    assert secret not in out.getvalue()


@pytest.mark.usefixtures("reset_structlog")
def test_console_logging() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", stream=out)
    get_logger("t").debug("hello", peer="mme1")
    text = out.getvalue()
    assert "hello" in text and "peer=mme1" in text and "\x1b[" not in text  # no colours off a terminal


def test_configure_logging_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="level"):
        configure_logging("loud", "json")
    with pytest.raises(ValueError, match="format"):
        configure_logging("info", "xml")


# --- metrics ------------------------------------------------------------------------------


def families(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels -> value} for every sample in the rendered text."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(render(metrics).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_counting() -> None:
    m = Metrics()
    m.count_answer(2001, 0)
    m.count_answer(2001, 0)
    m.count_answer(2001, 1)
    m.count_answer(5422, NO_STATUS)
    m.count_protocol_error(5004)
    m.count_protocol_error(5004)
    m.requests_rejected_busy += 3
    m.reloads_ok += 2
    m.reloads_failed += 1
    m.connections_total += 4
    m.connections_closed_error += 1
    assert m.answers == {(2001, 0): 2, (2001, 1): 1, (5422, -1): 1}
    assert m.protocol_errors == {5004: 2}


def test_latency_buckets() -> None:
    m = Metrics()
    for seconds in (10e-6, 50e-6, 51e-6, 0.3, 2.0):
        m.observe_latency(seconds)
    assert m.latency_buckets[0] == 2  # <= 50 µs, the bound itself included
    assert m.latency_buckets[1] == 1
    assert m.latency_buckets[LATENCY_BUCKETS.index(0.5)] == 1
    assert m.latency_buckets[-1] == 1  # above 1 s
    assert m.latency_count == 5
    assert m.latency_sum == pytest.approx(2.300111)


def test_rendered_text() -> None:
    m = Metrics()
    m.count_answer(2001, 0)
    m.count_answer(2001, 0)
    m.count_answer(2001, 2)
    m.count_answer(5422, NO_STATUS)
    m.count_protocol_error(3007)
    m.requests_rejected_busy = 3
    m.reloads_ok, m.reloads_failed = 2, 1
    m.connections_total = 5
    m.observe_latency(0.0004)
    m.observe_latency(0.004)
    m.set_peers_source(lambda: 2)
    m.set_bloom_source(lambda: (10, 90, 1))
    m.set_lists_source(lambda: {"black": 1000, "grey": 7})
    f = families(m)

    answers = f["s13eir_answers_total"]
    assert answers[(("equipment_status", "whitelisted"), ("result_code", "2001"))] == 2
    assert answers[(("equipment_status", "greylisted"), ("result_code", "2001"))] == 1
    assert answers[(("equipment_status", "none"), ("result_code", "5422"))] == 1
    assert f["s13eir_protocol_errors_total"] == {(("result_code", "3007"),): 1}
    assert f["s13eir_busy_answers_total"] == {(): 3}
    assert f["s13eir_list_reloads_total"] == {
        (("outcome", "ok"),): 2,
        (("outcome", "failed"),): 1,
        (("outcome", "refused"),): 0,
    }
    assert f["s13eir_connections_total"] == {(): 5}
    assert f["s13eir_peers_up"] == {(): 2}
    assert f["s13eir_bloom_positives_total"] == {(): 10}
    assert f["s13eir_bloom_negatives_total"] == {(): 90}
    assert f["s13eir_bloom_false_positives_total"] == {(): 1}
    assert f["s13eir_list_entries"] == {(("list", "black"),): 1000, (("list", "grey"),): 7}

    buckets = {dict(k)["le"]: v for k, v in f["s13eir_answer_latency_seconds_bucket"].items()}
    assert buckets["0.0002"] == 0
    assert buckets["0.0005"] == 1
    assert buckets["0.005"] == 2
    assert buckets["+Inf"] == 2
    assert f["s13eir_answer_latency_seconds_count"] == {(): 2}
    assert f["s13eir_answer_latency_seconds_sum"][()] == pytest.approx(0.0044)
    assert "process_cpu_seconds_total" in f
    assert f["s13eir_build_info"] == {(("python", platform.python_version()), ("version", __version__)): 1}


def test_loop_lag_buckets_and_exposition() -> None:
    m = Metrics()
    for lag in (-0.0002, 0.0004, 0.001, 0.003, 0.3, 2.5):
        m.loop_lag.record(lag)
    assert m.loop_lag.buckets[0] == 3  # early (counted as 0), sub-ms, and the 1 ms bound itself
    assert m.loop_lag.buckets[LAG_BUCKETS.index(5e-3)] == 1
    assert m.loop_lag.buckets[LAG_BUCKETS.index(0.5)] == 1
    assert m.loop_lag.buckets[-1] == 1
    assert m.loop_lag.count == 6
    f = families(m)
    buckets = {dict(k)["le"]: v for k, v in f["s13eir_event_loop_lag_seconds_bucket"].items()}
    assert (buckets["0.001"], buckets["0.002"], buckets["0.005"], buckets["1.0"], buckets["+Inf"]) == (3, 3, 4, 5, 6)
    assert f["s13eir_event_loop_lag_seconds_count"] == {(): 6}
    assert f["s13eir_event_loop_lag_seconds_sum"][()] == pytest.approx(2.8044)


async def test_loop_lag_probe_sees_a_held_loop() -> None:
    """A callback that holds the loop for 60 ms makes the next tick of a 10 ms probe at least
    50 ms late: a lower bound set by the hold, not a measure of speed."""
    lag = LoopLag()
    probe = LoopLagProbe(lag, 0.01)
    probe.start()
    try:
        await asyncio.sleep(0.03)
        asyncio.get_running_loop().call_soon(time.sleep, 0.06)
        await asyncio.sleep(0.05)
    finally:
        probe.stop()
    assert lag.count >= 2
    assert sum(lag.buckets[LAG_BUCKETS.index(0.05) :]) >= 1  # a tick in the (20 ms, 50 ms] bucket or above
    with pytest.raises(ValueError):
        LoopLagProbe(lag, 0)


def test_failing_source_is_left_out_of_the_scrape() -> None:
    m = Metrics()

    def broken() -> int:
        raise RuntimeError("peer table gone")

    m.set_peers_source(broken)
    f = families(m)
    assert "s13eir_peers_up" not in f
    assert "s13eir_answers_total" not in f  # no answers yet: the family has no samples
    assert f["s13eir_connections_total"] == {(): 0}


def test_registries_are_private() -> None:
    # Two instances would collide on the global registry ("Duplicated timeseries").
    a, b = Metrics(), Metrics()
    a.connections_total = 1
    assert families(a)["s13eir_connections_total"] == {(): 1}
    assert families(b)["s13eir_connections_total"] == {(): 0}


# --- HTTP ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Readiness:
    def __init__(self) -> None:
        self.state = (False, "lists not loaded")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(readiness: Readiness) -> AsyncIterator[tuple[int, Metrics]]:
    metrics = Metrics()
    srv = await start_http("127.0.0.1", 0, metrics, readiness)
    port = srv.sockets[0].getsockname()[1]
    yield port, metrics
    srv.close()
    await srv.wait_closed()


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)  # the server closes after answering
    finally:
        writer.close()


async def request(port: int, method: str, path: str) -> Response:
    data = await raw(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body)


async def test_healthz(server: tuple[int, Metrics]) -> None:
    r = await request(server[0], "GET", "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.headers["connection"] == "close"
    assert r.headers["content-length"] == "3"


async def test_readyz_follows_the_callable(server: tuple[int, Metrics], readiness: Readiness) -> None:
    r = await request(server[0], "GET", "/readyz")
    assert (r.status, r.body) == (503, b"lists not loaded\n")
    readiness.state = (True, "")
    r = await request(server[0], "GET", "/readyz?verbose=1")
    assert r.status == 200


async def test_metrics_endpoint(server: tuple[int, Metrics]) -> None:
    port, metrics = server
    metrics.count_answer(2001, 1)
    r = await request(port, "GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.body.decode())
        for s in fam.samples
    }
    assert samples[("s13eir_answers_total", (("equipment_status", "blacklisted"), ("result_code", "2001")))] == 1


async def test_head_has_headers_and_no_body(server: tuple[int, Metrics]) -> None:
    r = await request(server[0], "HEAD", "/healthz")
    assert (r.status, r.body) == (200, b"")
    assert r.headers["content-length"] == "3"


async def test_not_found_and_method_not_allowed(server: tuple[int, Metrics]) -> None:
    assert (await request(server[0], "GET", "/nope")).status == 404
    r = await request(server[0], "POST", "/metrics")
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"


async def test_bad_request_line(server: tuple[int, Metrics]) -> None:
    data = await raw(server[0], b"garbage\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_oversized_head_is_refused(server: tuple[int, Metrics]) -> None:
    head = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 10_000 + b"\r\n\r\n"
    try:
        data = await raw(server[0], head)
    except ConnectionResetError:
        data = b""  # closed with our bytes unread: also a refusal
    assert data == b"" or data.startswith(b"HTTP/1.1 431 ")


async def test_slow_client_times_out(server: tuple[int, Metrics], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "HEAD_TIMEOUT_S", 0.2)
    data = await raw(server[0], b"GET /healthz HTTP/1.1\r\n")  # never finishes its head
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_node_metrics_count_fast_path_and_full_path_answers() -> None:
    """Whitelisted answers of the fast path are counted apart from the others (a counter
    read at scrape time); /metrics must show both, each once."""
    from tests.conftest import node_config, running_node, verdict

    async with running_node(config_from_mapping(node_config())) as rn:
        assert [await verdict(rn, imei) for imei in ("35450712345675", "35450712345676", "35209900176148")] == [
            "WHITELISTED",
            "WHITELISTED",
            "BLACKLISTED",
        ]
        assert rn.node.app.whitelisted_fast == 2  # the fast path took them: not a test of the full path
        r = await request(rn.http_port, "GET", "/metrics")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.body.decode())
            for s in fam.samples
        }
        answers = {k[1]: v for k, v in samples.items() if k[0] == "s13eir_answers_total"}
        assert answers == {
            (("equipment_status", "whitelisted"), ("result_code", "2001")): 2,
            (("equipment_status", "blacklisted"), ("result_code", "2001")): 1,
        }


async def test_node_metrics_say_which_build_runs() -> None:
    from tests.conftest import node_config, running_node

    async with running_node(config_from_mapping(node_config())) as rn:
        r = await request(rn.http_port, "GET", "/metrics")
    assert r.status == 200
    (family,) = (f for f in text_string_to_metric_families(r.body.decode()) if f.name == "s13eir_build_info")
    assert family.type == "gauge"
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"version": __version__, "python": platform.python_version()}, 1)
    ]


@pytest.mark.parametrize("interval_ms", [5, 0])
async def test_node_runs_the_loop_lag_probe_as_configured(interval_ms: int) -> None:
    from tests.conftest import node_config, running_node

    cfg = config_from_mapping(node_config(metrics={"loop_lag_interval_ms": interval_ms}))
    async with running_node(cfg) as rn:
        await asyncio.sleep(0.05)
        r = await request(rn.http_port, "GET", "/metrics")
        count = next(
            s.value
            for fam in text_string_to_metric_families(r.body.decode())
            for s in fam.samples
            if s.name == "s13eir_event_loop_lag_seconds_count"
        )
        if interval_ms:
            assert count >= 1  # ticks every 5 ms over at least 50 ms
        else:
            assert count == 0  # turned off: the family is there, empty
