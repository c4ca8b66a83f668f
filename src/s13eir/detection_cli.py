"""``s13eir detect --trace FILE --config PATH [--json]``: the detection rules of a
configuration over a trace of checks, in trace time, and the cases they open.

An operator tunes the thresholds on last month's attach logs, turned into a trace, before
moving a rule from ``observe`` to ``block``. The core is the one a node runs
(:mod:`s13eir.detection.detector`); only the clock differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .config import Config
from .detection.cases import Cases
from .detection.detector import Detector
from .detection.tac_db import TacDatabase, TacFileError, read_tac_file
from .detection.trace import TraceError, read_trace

EXPIRE_EVERY_S = 3600.0  # of trace time: state past every window is dropped this often


def add_detect_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("detect", help="run the clone and tamper detection rules over a trace of checks")
    p.add_argument("--trace", required=True, help="CSV: t,imei,imsi,peer[,sv] (t in seconds, in time order)")
    p.add_argument("--config", default="config/eir.yaml", help="the peers (interface, location) and detection rules")
    p.add_argument("--tacs", default=None, help="the GSMA TAC database (pipe-separated), for the TAC rules")
    p.add_argument("--json", action="store_true", help="print the cases and the counts as JSON")


def read_tacs(path: str) -> TacDatabase:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return read_tac_file(f, path)


def run_trace(config: Config, path: str, tacs: TacDatabase | None = None) -> tuple[Cases, dict[str, Any]]:
    peers = config.peers.sites()
    locations = {host: p.location for host, p in peers.items() if p.location is not None}
    detector = Detector(config.detection, locations, tacs.info if tacs is not None else None)
    cases = Cases(tacs.info if tacs is not None else None)
    findings: dict[str, int] = {}
    sightings = 0
    started = time.perf_counter()
    next_expiry = EXPIRE_EVERY_S
    with open(path, encoding="utf-8", newline="") as f:
        for obs in read_trace(f, path, peers):
            sightings += 1
            if obs.t >= next_expiry:
                detector.expire(obs.t)
                next_expiry = obs.t + EXPIRE_EVERY_S
            for finding in detector.observe(obs, obs.t):
                findings[finding.rule] = findings.get(finding.rule, 0) + 1
                cases.add(finding)
    seconds = time.perf_counter() - started
    summary = {
        "sightings": sightings,
        "devices_tracked": len(detector),
        "findings": findings,
        "cases": len(cases),
        "seconds": round(seconds, 3),
        "sightings_per_second": round(sightings / seconds) if seconds > 0 else None,
    }
    return cases, summary


def cmd_detect(args: argparse.Namespace) -> int:
    from .config_loading import load_config

    config = load_config(args.config)
    try:
        tacs = read_tacs(args.tacs) if args.tacs else None
        cases, summary = run_trace(config, args.trace, tacs)
    except (TraceError, TacFileError) as exc:
        print(f"s13eir detect: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"s13eir detect: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"summary": summary, "cases": [c.as_dict() for c in cases.all()]}))
        return 0
    for case in cases.all():
        rules = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in case.rules.items())
        model = f"  {case.model}" if case.model else ""
        print(f"{case.imei14}  {case.action.value:<8}  {len(case.imsis)} IMSI(s)  "
              f"t {case.first:g}-{case.last:g}  {rules}{model}")  # fmt: skip
        for detail in case.details[:3]:
            print(f"    {detail}")
    rate = summary["sightings_per_second"]
    print(f"{summary['sightings']} sightings, {summary['cases']} cases, {summary['seconds']} s"
          + (f" ({rate:,} sightings/s)" if rate else ""), file=sys.stderr)  # fmt: skip
    return 0
