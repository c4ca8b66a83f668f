"""s13eir's throughput and latency, measured in one run on one machine, as ratios.

Every figure comes from ``s13eir load`` (the same load generator, same settings)
against, in turn:

1. the ceiling: bench/echo_server.py, a framed server answering every ECR with a
   fixed ECA (no validation, no lookup);
2. s13eir with 1 worker and with 2 workers, phones on no list (Bloom negatives);
3. s13eir with the lists embedded, every phone on the blacklist (Bloom positives);
4. s13eir with the lists in Redis, every phone on the blacklist (Bloom positives
   confirmed in Redis, micro-batched), when redis-server is installed;
5. open loop at 50% and 80% of the 1-worker maximum: p99 and p99.9 latency, and the
   echo server at the same rates (the latency floor of this machine at that rate);
   then 50% again with the load generator napping between turns (--nap-us 10)
   instead of polling, which leaves CPU 1 idle part of the time;
6. the machine itself (bench/stalls.py): how often a CPU-bound loop on CPU 0 does not
   run for over 1 ms, with CPU 1 idle and with CPU 1 busy as in the open-loop runs.

The whole set runs ``--rounds`` times (3 by default), interleaved; ratios are taken
within a round and the table shows their median and range across rounds.

Single-process servers are pinned to CPU 0 and the load generator (and redis-server)
to CPU 1 (``taskset``), so "1 worker" means one core. The machine is shared and noisy:
compare ratios from the same run, not absolute numbers across runs.

    .venv/bin/python bench/run.py [--duration 5] [--rounds 3] [--json bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness import (
    LISTS,
    PY,
    echo_server,
    free_port,
    lag_during,
    load,
    loop_lag_buckets,
    p,
    pin,
    s13eir,
    wait_tcp,
    write_config,
)
from stalls import describe, stalls


def redis_scenario(tmp: Path, args: argparse.Namespace, cache_entries: int) -> dict[str, Any] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    rport = free_port()
    rdir = Path(tempfile.mkdtemp(prefix=f"redis-{cache_entries}-", dir=tmp))
    # Redis shares CPU 1 with the load generator, so that s13eir keeps CPU 0 to itself as in
    # the other scenarios. Left to the scheduler, Redis mostly ran on CPU 0 (it is woken by
    # s13eir's writes), taking about a fifth of that core while CPU 1 was more than half idle.
    redis = subprocess.Popen([*pin(1), exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(rdir)], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_tcp(rport, redis)
        port, http = free_port(), free_port()
        # The same lists embedded (for the load generator's expected verdicts) and in Redis.
        same = {
            "lists": [
                {"path": str(LISTS / "blacklist.csv"), "format": "dirbs-blacklist"},
                {"path": str(LISTS / "exceptions.csv"), "format": "dirbs-exceptions"},
            ]
        }
        expected = write_config(tmp, free_port(), free_port(), **same)
        # A closed loop with 256 requests outstanding saturates the core on purpose; with the
        # default 50 ms lookup timeout the overload would turn into policy answers instead.
        store = {
            "backend": "redis",
            "redis": {"url": f"redis://127.0.0.1:{rport}/0", "timeout_ms": 2000, "cache_entries": cache_entries},
        }
        config = write_config(tmp, port, http, **store)
        for file, name in (("blacklist.csv", "black"), ("exceptions.csv", "exceptions")):
            subprocess.run([PY, "-m", "s13eir.cli", "lists", "import", str(LISTS / file), "--list", name,
                            "--config", str(config)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        server = s13eir(config, http)
        try:
            closed = ["--concurrency", str(args.concurrency)]
            return load(tmp, port, args, *closed, "--config", str(expected), "--mix", "black=1.0")
        finally:
            server.stop()
    finally:
        redis.terminate()
        redis.wait(10)


CEILING = "ceiling: framed echo server"
NEGATIVE = "s13eir 1 worker, Bloom negative"
REDIS_CACHED = "s13eir 1 worker, Bloom positive (Redis, node cache on)"
REDIS_EVERY_LOOKUP = "s13eir 1 worker, Bloom positive (Redis, every lookup to Redis)"


# Open-loop runs: share of the 1-worker maximum, and the generator's nap between turns in
# µs ("0": it polls, keeping CPU 1 busy; see --nap-us and bench/stalls.py).
OPEN_LOOPS = ((0.5, "0"), (0.8, "0"), (0.5, "10"))


def open_loop_name(share: float, nap: str, echo: bool = False) -> str:
    pct = int(share * 100)
    name = f"  echo server, same open-loop rate ({pct}%)" if echo else f"open loop at {pct}% of max"
    return name if nap == "0" else f"{name}, generator naps {nap} µs"


def one_round(tmp: Path, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """Every scenario once, in a fixed order."""
    # Phones on no list only (expected WHITELISTED), so that the echo server's fixed
    # answer is right too and every scenario sends the same kind of traffic.
    closed = ["--concurrency", str(args.concurrency), "--mix", "unknown=1.0"]
    rows: list[tuple[str, dict[str, Any]]] = []
    with echo_server() as port:
        rows.append((CEILING, load(tmp, port, args, *closed)))

    port, http = free_port(), free_port()
    config = write_config(tmp, port, http)
    server = s13eir(config, http)
    try:
        neg = load(tmp, port, args, *closed, "--config", str(config))
        positive = ["--concurrency", str(args.concurrency), "--config", str(config), "--mix", "black=1.0"]
        rows.append((NEGATIVE, neg))
        rows.append(("s13eir 1 worker, Bloom positive (embedded)", load(tmp, port, args, *positive)))
        top = float(neg["answers_per_s"])
        for share, nap in OPEN_LOOPS:
            rate = str(int(top * share))
            before = loop_lag_buckets(http)
            opened = load(
                tmp, port, args, "--rate", rate, "--nap-us", nap, "--mix", "unknown=1.0", "--config", str(config)
            )
            opened["loop_lag"] = lag_during(before, loop_lag_buckets(http))
            rows.append((open_loop_name(share, nap), opened))
    finally:
        server.stop()

    # The same open-loop rates against the echo server: what sockets, event loop and load
    # generator alone cost in latency at that rate on this machine.
    with echo_server() as port:
        for share, nap in OPEN_LOOPS:
            rate = str(int(top * share))
            rows.append((open_loop_name(share, nap, echo=True),
                         load(tmp, port, args, "--rate", rate, "--nap-us", nap, "--mix", "unknown=1.0")))  # fmt: skip

    # N5g-eir (HTTP/2) from the same node and lists, next to S13.
    port, http, sbi = free_port(), free_port(), free_port()
    config = write_config(tmp, port, http)
    cfg = yaml.safe_load(config.read_text())
    cfg["sbi"] = {"address": "127.0.0.1", "port": sbi}
    config.write_text(yaml.safe_dump(cfg))
    server = s13eir(config, http)
    try:
        sbi_closed = ["--sbi", f"http://127.0.0.1:{sbi}", "--concurrency", "32", "--mix", "unknown=1.0"]
        rows.append(("N5g-eir (HTTP/2) 1 worker, Bloom negative",
                     load(tmp, port, args, *sbi_closed, "--config", str(config))))  # fmt: skip
    finally:
        server.stop()

    port, http = free_port(), free_port()
    config = write_config(tmp, port, http)
    server = s13eir(config, http, workers=2)
    try:
        rows.append(("s13eir 2 workers, Bloom negative",
                     load(tmp, port, args, *closed, "--config", str(config), cpu=None)))  # fmt: skip
    finally:
        server.stop()

    for cache, name in ((100_000, REDIS_CACHED), (0, REDIS_EVERY_LOOKUP)):
        redis_result = redis_scenario(tmp, args, cache)
        if redis_result is not None:
            rows.append((name, redis_result))
    return rows


def median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def targets(rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    """The performance targets, checked against this run: the median across rounds, and in
    how many rounds each was met on its own."""

    def ratio(name: str, base: str) -> list[float]:
        return [float(r[name]["answers_per_s"]) / (float(r[base]["answers_per_s"]) or 1) for r in rounds if name in r]

    def check(label: str, values: list[float], limit: float, above: bool, fmt: str) -> str:
        if not values:
            return f"{label}: not measured"
        met = sum(1 for v in values if (v >= limit if above else v < limit))
        verdict = "met" if (median(values) >= limit if above else median(values) < limit) else "NOT met"
        return f"{label}: {format(median(values), fmt)}, {verdict} (in {met} of {len(values)} rounds)"

    half = open_loop_name(0.5, "0")
    lines = [
        check("Bloom negative >= 0.50 of the ceiling", ratio(NEGATIVE, CEILING), 0.5, True, ".2f"),
        check("Redis positives >= 0.30 of Bloom negative", ratio(REDIS_EVERY_LOOKUP, NEGATIVE), 0.3, True, ".2f"),
        check("p99 at 50% of max < 1000 µs", [p(r[half], "p99") for r in rounds], 1000, False, ".0f"),
        check("p99.9 at 50% of max < 5000 µs", [p(r[half], "p999") for r in rounds], 5000, False, ".0f"),
    ]
    lost = sum(int(res["requests"]) - int(res["answers"]) - int(res["timeouts"]) for r in rounds for res in r.values())
    timeouts = sum(int(res["timeouts"]) for r in rounds for res in r.values())
    lines.append(f"no request lost: {lost} unanswered and unreported, {timeouts} reported as timeouts")
    return lines


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range across rounds when there are several."""
    text = format(median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
    return text


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario")
    ap.add_argument("--rounds", type=int, default=3, help="times every scenario is measured, interleaved")
    ap.add_argument("--mmes", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--stall-seconds", type=float, default=5.0, help="length of each machine stall probe")
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args()
    rounds: list[dict[str, dict[str, Any]]] = []
    # The machine itself, once per round: gaps a CPU-bound loop on CPU 0 sees while CPU 1 is
    # busy (as in the open-loop runs), and once with CPU 1 idle (see bench/stalls.py).
    machine: list[dict[str, Any]] = []
    idle = stalls(args.stall_seconds, other_core_busy=False)
    with tempfile.TemporaryDirectory() as t:
        for i in range(args.rounds):
            print(f"round {i + 1} of {args.rounds}", file=sys.stderr)
            rounds.append(dict(one_round(Path(t), args)))
            machine.append(stalls(args.stall_seconds, other_core_busy=True))

    # Ratios are taken within a round (the machine's speed drifts between rounds), then
    # summarised across rounds: the median, with the range in brackets.
    print(f"{'scenario':62} {'answers/s':>22} {'vs ceiling':>17} {'vs Bloom-neg':>17} "
          f"{'p50 µs':>7} {'p99 µs':>19} {'p99.9 µs':>9} {'lost':>5} {'send lag p99 µs':>16}")  # fmt: skip
    for name in rounds[0]:
        rs = [r[name] for r in rounds if name in r]
        rates = [float(r["answers_per_s"]) for r in rs]
        vs_ceiling = [float(r[name]["answers_per_s"]) / (float(r[CEILING]["answers_per_s"]) or 1) for r in rounds]
        vs_neg = [float(r[name]["answers_per_s"]) / (float(r[NEGATIVE]["answers_per_s"]) or 1) for r in rounds]
        lost = sum(int(r["requests"]) - int(r["answers"]) - int(r["timeouts"]) for r in rs)
        # Open loop: how late the generator itself wrote requests (part of every latency).
        lags = [float(r["send_lag_us"]["p99"]) for r in rs if r.get("send_lag_us")]
        lag = format(median(lags), ".0f") if lags else ""
        print(f"{name:62} {spread(rates, '.0f'):>22} {spread(vs_ceiling, '.2f'):>17} {spread(vs_neg, '.2f'):>17} "
              f"{median([p(r, 'p50') for r in rs]):7.0f} {spread([p(r, 'p99') for r in rs], '.0f'):>19} "
              f"{median([p(r, 'p999') for r in rs]):9.0f} {lost:5d} {lag:>16}")  # fmt: skip
    # How often s13eir's event loop was held during the open-loop runs (its lag probe, every
    # 5 ms): a held loop delays every answer queued behind it.
    for name in rounds[0]:
        lags = [r[name]["loop_lag"] for r in rounds if "loop_lag" in r.get(name, {})]
        if lags:
            share1 = [lag["over_1ms"] / (lag["ticks"] or 1) for lag in lags]
            share5 = [lag["over_5ms"] / (lag["ticks"] or 1) for lag in lags]
            print(f"{name}: event-loop probe ticks late by > 1 ms {spread([100 * x for x in share1], '.1f')} %, "
                  f"> 5 ms {spread([100 * x for x in share5], '.2f')} %")  # fmt: skip
    print(describe("machine: CPU-bound loop on CPU 0, CPU 1 idle", idle, args.stall_seconds))
    for i, m in enumerate(machine, 1):
        print(describe(f"machine: CPU-bound loop on CPU 0, CPU 1 busy (after round {i})", m, args.stall_seconds))
    for i, r in enumerate(rounds, 1):
        for name, res in r.items():
            if res["mismatches"] or res["timeouts"] or res["errors"]:
                print(f"round {i}, {name}: {res['mismatches']} mismatches, {res['timeouts']} timeouts, "
                      f"{res['errors']} errors;", res.get("mismatch_examples", [])[:2],
                      res.get("error_examples", [])[:2])  # fmt: skip
    print("targets:")
    for line in targets(rounds):
        print(f"  {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "machine": {"idle": idle, "busy": machine}}, indent=2))


if __name__ == "__main__":
    main()
