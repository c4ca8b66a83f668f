"""bench/run.py's closing check of the performance targets, on made-up rounds: the
verdict follows the median across rounds, and the count of rounds that met each target
is reported beside it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_run() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # run.py imports its sibling stalls.py lazily
    try:
        spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def result(rate: float, p99: float = 500.0, answers: int = 100) -> dict[str, Any]:
    latency = {"p99": p99, "p999": 900.0}
    return {"answers_per_s": rate, "latency_us": latency, "requests": 100, "answers": answers, "timeouts": 0}


def one_round(run: ModuleType, neg: float, redis: float, p99: float, answers: int = 100) -> dict[str, Any]:
    return {
        run.CEILING: result(200_000),
        run.NEGATIVE: result(neg),
        run.open_loop_name(0.5, "0"): result(neg / 2, p99=p99, answers=answers),
        run.REDIS_EVERY_LOOKUP: result(redis),
    }


def test_targets_follow_the_median_and_count_rounds() -> None:
    run = bench_run()
    rounds = [
        one_round(run, 120_000, 40_000, 700),  # 0.60, 0.33, 0.7 ms: all met
        one_round(run, 90_000, 20_000, 1_500),  # 0.45, 0.22, 1.5 ms: none met
        one_round(run, 110_000, 35_000, 900, answers=99),  # 0.55, 0.32, 0.9 ms; one request lost
    ]
    lines = run.targets(rounds)
    assert lines[0] == "Bloom negative >= 0.50 of the ceiling: 0.55, met (in 2 of 3 rounds)"
    assert lines[1] == "Redis positives >= 0.30 of Bloom negative: 0.32, met (in 2 of 3 rounds)"
    assert lines[2] == "p99 at 50% of max < 1000 µs: 900, met (in 2 of 3 rounds)"
    assert lines[3] == "p99.9 at 50% of max < 5000 µs: 900, met (in 3 of 3 rounds)"
    assert lines[4] == "no request lost: 1 unanswered and unreported, 0 reported as timeouts"

    slow = [one_round(run, 90_000, 20_000, 1_500), one_round(run, 95_000, 40_000, 1_200)]
    lines = run.targets(slow)
    assert lines[0].endswith("NOT met (in 0 of 2 rounds)")
    assert lines[2] == "p99 at 50% of max < 1000 µs: 1350, NOT met (in 0 of 2 rounds)"


def test_a_scenario_that_did_not_run_is_reported_as_such() -> None:
    run = bench_run()
    rounds = [one_round(run, 120_000, 40_000, 700)]
    del rounds[0][run.REDIS_EVERY_LOOKUP]  # no redis-server on this machine
    assert run.targets(rounds)[1] == "Redis positives >= 0.30 of Bloom negative: not measured"
