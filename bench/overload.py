"""A node driven at twice its capacity, then back to half of it: answers, 3004s, DOIC
abatement, timeouts, and how long the node takes to recover.

Starts ``s13eir serve`` (pinned to CPU 0) and drives it with ``s13eir load`` (pinned to
CPU 1). First the capacity: a closed-loop run, its answers/s. Then, for each case, an
open-loop run at ``--factor`` times that rate for ``--duration`` seconds, followed at once
by a run at half the capacity during which the node's
``s13eir_overload_reduction_percent`` is polled until it is back to 0.

The generator must be able to offer twice the node's capacity from one core, so the
scenario (``--scenario``) decides what a request costs the node:

- ``redis`` (the default): every phone listed, every lookup confirmed in Redis (node
  cache off; redis-server on CPU 0 with the node: the EIR site's two processes on one core,
  so that the generator's core does not starve Redis), the path where an EIR spends the
  most per request;
- ``full``: the sample lists embedded, the ECR fast path off
  (``policy.check_destination_realm``), every request through the full path;
- ``fast``: the sample lists embedded, the fast path on. Its capacity is about the
  generator's own, so twice it cannot be offered here: the run says so.

The cases:

- ``no admission control``: a node with ``diameter.overload.enabled: false`` (the
  baseline: everything queues);
- ``3004``: admission control, MMEs without DOIC: the node refuses a share with 3004;
- ``DOIC``: admission control, MMEs with ``--doic``: the MMEs shed what the node's
  overload reports ask.

Ratios are to the capacity measured in the same run. Bounded: every load run has a
duration and a timeout (``--timeout``, the MMEs' answer timeout, default 2 s).

    .venv/bin/python bench/overload.py [--factor 2] [--duration 10] [--mmes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness import LISTS, PY, Server, free_port, pin, wait_tcp, write_config


@contextlib.contextmanager
def redis_store(tmp: Path) -> Iterator[dict[str, Any]]:
    """A redis-server on CPU 0 (with the node) holding the sample blacklist and
    exceptions; yields the store section of a node reading every lookup from it."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    rport = free_port()
    redis = subprocess.Popen([*pin(0), exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_tcp(rport, redis)
        store = {"backend": "redis",
                 "redis": {"url": f"redis://127.0.0.1:{rport}/0", "timeout_ms": 2000, "cache_entries": 0}}  # fmt: skip
        config = write_config(tmp, free_port(), free_port(), **store)
        for file, name in (("blacklist.csv", "black"), ("exceptions.csv", "exceptions")):
            subprocess.run([PY, "-m", "s13eir.cli", "lists", "import", str(LISTS / file), "--list", name,
                            "--config", str(config)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        yield store
    finally:
        redis.terminate()
        redis.wait(10)


def reduction(http: int) -> float:
    """The node's reduction now; -1 when /metrics did not answer within 1 s (the overloaded
    loop serves it too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("s13eir_overload_reduction_percent "):
                    return float(line.split()[1])
    except OSError:
        return -1.0
    return 0.0


def load_cmd(port: int, out: Path, args: argparse.Namespace, duration: float, *extra: str) -> list[str]:
    return [*pin(1), PY, "-m", "s13eir.cli", "load", "--peer", f"127.0.0.1:{port}", "--mmes", str(args.mmes),
            "--duration", str(duration), "--warmup", "0.5", "--timeout", str(args.timeout), "--no-live",
            "--json", str(out), *args.workload, *extra]  # fmt: skip


def run_load(port: int, tmp: Path, args: argparse.Namespace, duration: float, *extra: str) -> dict[str, Any]:
    out = tmp / f"load-{time.monotonic_ns()}.json"
    subprocess.run(load_cmd(port, out, args, duration, *extra), check=False, stdout=subprocess.DEVNULL,
                   timeout=duration * 4 + 60)  # fmt: skip
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def overloaded_then_half(port: int, http: int, tmp: Path, args: argparse.Namespace, capacity: float,
                         *extra: str) -> dict[str, Any]:  # fmt: skip
    out = tmp / f"over-{time.monotonic_ns()}.json"
    proc = subprocess.Popen(load_cmd(port, out, args, args.duration, "--rate", str(capacity * args.factor), *extra),
                            stdout=subprocess.DEVNULL)  # fmt: skip
    series: list[float] = []  # the reduction every 0.25 s of the overloaded run
    while proc.poll() is None:
        series.append(reduction(http))
        time.sleep(0.25)
    over: dict[str, Any] = json.loads(out.read_text())
    # At once, half the capacity: how long until the node stops shedding.
    out = tmp / f"half-{time.monotonic_ns()}.json"
    t0 = time.monotonic()
    half = subprocess.Popen(load_cmd(port, out, args, args.recovery, "--rate", str(capacity / 2), *extra),
                            stdout=subprocess.DEVNULL)  # fmt: skip
    recovered: float | None = None
    peak = 0.0
    while half.poll() is None:
        r = reduction(http)
        if r < 0:
            continue
        peak = max(peak, r)
        if r == 0 and recovered is None:
            recovered = time.monotonic() - t0
        time.sleep(0.05)
    after: dict[str, Any] = json.loads(out.read_text())
    return {
        "overload": over,
        "after": after,
        "recovered_s": recovered,
        "reduction_peak_after": peak,
        "reduction_series": series,
    }


def summary(name: str, res: dict[str, Any], capacity: float, factor: float) -> str:
    o, a = res["overload"], res["after"]
    t = o["elapsed_s"]
    offered = (o["requests"] - o["dropped"] + o.get("abated", 0)) / t  # what the MMEs had to send
    ok = o["answers"] - o.get("busy", 0)
    rec = "never" if res["recovered_s"] is None else f"{res['recovered_s']:.2f} s"
    short = "" if offered >= 0.9 * factor * capacity else f" (the generator fell short of {factor:g}x)"
    return (f"{name:<21} offered {offered / capacity:.2f}x{short}: verdicts {ok / t / capacity:.2f}x capacity, "
            f"3004 {o.get('busy', 0):,}, abated {o.get('abated', 0):,}, timeouts {o['timeouts'] - o['dropped']:,} "
            f"(+{o['dropped']:,} never sent), p99 {o['latency_us']['p99'] / 1000:.1f} ms"
            f" | after: recovered in {rec}, 3004 {a.get('busy', 0):,}, timeouts {a['timeouts']:,}, "
            f"p99 {a['latency_us']['p99'] / 1000:.2f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=float, default=2.0, help="offered load, times the measured capacity")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds at --factor times capacity")
    ap.add_argument("--recovery", type=float, default=6.0, help="seconds at half the capacity afterwards")
    ap.add_argument("--mmes", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=2.0, help="the MMEs' answer timeout")
    ap.add_argument("--scenario", choices=["redis", "full", "fast"], default="redis")
    ap.add_argument("--json", metavar="OUT", help="write every result as JSON to OUT")
    args = ap.parse_args()
    results: dict[str, Any] = {"scenario": args.scenario}
    with tempfile.TemporaryDirectory(prefix="s13eir-overload-") as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        store: dict[str, Any] = {}
        args.workload = []
        if args.scenario == "redis":
            store = stack.enter_context(redis_store(tmp))
            expected = write_config(tmp, free_port(), free_port(), lists=[
                {"path": str(LISTS / "blacklist.csv"), "format": "dirbs-blacklist"},
                {"path": str(LISTS / "exceptions.csv"), "format": "dirbs-exceptions"}])  # fmt: skip
            args.workload = ["--config", str(expected), "--mix", "black=1.0"]
        cases = [("no admission control", False, ()), ("3004", True, ()), ("DOIC", True, ("--doic",))]
        capacity = 0.0
        for name, enabled, extra in cases:
            port, http = free_port(), free_port()
            config = write_config(tmp, port, http, **store)
            cfg = yaml.safe_load(config.read_text())
            cfg["diameter"] = {"overload": {"enabled": enabled}}
            cfg["metrics"]["loop_lag_interval_ms"] = 100  # the admission control's sampling period
            if args.scenario == "full":
                cfg["policy"] = {"check_destination_realm": True}  # the fast path off
            config.write_text(yaml.safe_dump(cfg))
            node = Server([*pin(0), PY, "-m", "s13eir.cli", "serve", "--config", str(config)], port, http)
            try:
                if not capacity:
                    closed = run_load(port, tmp, args, 5.0, "--concurrency", "64")
                    capacity = closed["answers_per_s"]
                    print(f"{args.scenario}: capacity (closed loop, {args.mmes} MMEs x 64 outstanding): "
                          f"{capacity:,.0f} answers/s")  # fmt: skip
                    results["capacity"] = closed
                res = overloaded_then_half(port, http, tmp, args, capacity, *extra)
            finally:
                node.stop()
            results[name] = res
            print(summary(name, res, capacity, args.factor), flush=True)
            print(f"  reduction every 0.25 s: {' '.join(f'{r:.0f}' for r in res['reduction_series'])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
