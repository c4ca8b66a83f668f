"""``s13eir cases list|show|close|undo|purge``: the detection cases of the running nodes.

With ``store.backend: redis`` the cases are the cluster's and are read and closed in
Redis directly (:mod:`s13eir.detection_shared`). An embedded node keeps its cases in its
memory: they are read from its metrics port (``/cases``, ``--url`` or the configuration's
``metrics`` address), and closing one needs the shared store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from .config import Config
from .detection.cases import Case, masked
from .detection.detector import Detector
from .detection_shared import RedisError, SharedDetection

EXIT_NOT_FOUND = 1
EXIT_UNAVAILABLE = 3


def add_cases_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cases", help="the clone and tamper detection cases of the running nodes")
    cases = p.add_subparsers(dest="cases_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", default="config/eir.yaml", help="the nodes' configuration (store, metrics)")
        q.add_argument("--url", default=None, help="an embedded node's metrics port (default: from the configuration)")
        q.add_argument("--json", action="store_true", help="print JSON")

    ls = cases.add_parser("list", help="the cases, by first finding")
    common(ls)
    ls.add_argument("--status", choices=["open", "closed", "all"], default="open")
    show = cases.add_parser("show", help="one case with its evidence")
    common(show)
    show.add_argument("imei", help="the IMEI (14 digits; a 15th is ignored)")
    close = cases.add_parser("close", help="close a case (a later finding opens it again)")
    common(close)
    close.add_argument("imei")
    close.add_argument("--note", required=True, help="why: checked with the owner, a false alarm...")
    close.add_argument("--by", default=os.environ.get("USER") or "operator", help="who closes it (default: $USER)")
    purge = cases.add_parser("purge", help="delete the cases closed more than --days ago (Redis store)")
    common(purge)
    purge.add_argument("--days", type=float, required=True, help="closed at least this many days ago")
    undo = cases.add_parser("undo", help="undo the list changes detection made for a case, and close it")
    common(undo)
    undo.add_argument("imei")
    undo.add_argument("--note", required=True, help="why: a false alarm, the owner's two phones...")
    undo.add_argument("--by", default=os.environ.get("USER") or "operator", help="who undoes it (default: $USER)")


def cmd_cases(args: argparse.Namespace) -> int:
    from .config_loading import load_config

    config = load_config(args.config)
    imei = getattr(args, "imei", None)
    if imei is not None:
        imei = imei.strip()[:14]
        if len(imei) != 14 or not imei.isdigit():
            print(f"s13eir cases: {args.imei!r} is not an IMEI (14 or 15 digits)", file=sys.stderr)
            return 2
    try:
        if config.store.backend == "redis":
            return asyncio.run(_shared(config, args, imei))
        return _embedded(config, args, imei)
    except (RedisError, OSError) as exc:
        print(f"s13eir cases: the detection store does not answer: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


async def _shared(config: Config, args: argparse.Namespace, imei: str | None) -> int:
    from .backends.redis_client import connect

    shared = SharedDetection(connect(config.store.redis, timeout_s=5.0), config.store.redis.prefix,
                             Detector(config.detection, {}))  # fmt: skip
    mask = config.logging.mask_imsi  # as the nodes' /cases and logs show them

    def shown(case: Case | None) -> dict[str, Any] | None:
        return None if case is None else masked(case.as_dict()) if mask else case.as_dict()

    try:
        if args.cases_command == "list":
            return _print_list([c for c in map(shown, await shared.all()) if c is not None], args)
        if args.cases_command == "purge":
            gone = await shared.purge(time.time() - args.days * 86400)
            print(json.dumps({"purged": gone}) if args.json else f"{gone} closed case(s) purged")
            return 0
        assert imei is not None
        if args.cases_command == "show":
            return _print_case(shown(await shared.get(imei)), imei, args)
        if args.cases_command == "undo":
            # The writer (s13eir sync) removes detection's entries and audits it; the
            # case is closed and later findings on it change no list.
            return _print_case(shown(await shared.request_undo(imei, time.time(), args.by, args.note)), imei, args)
        return _print_case(shown(await shared.close(imei, time.time(), args.by, args.note)), imei, args)
    finally:
        await shared.redis.aclose()


def _embedded(config: Config, args: argparse.Namespace, imei: str | None) -> int:
    if args.cases_command in ("close", "undo", "purge"):
        print(f"s13eir cases: {args.cases_command} needs the shared store (store.backend: redis); an embedded "
              "node's cases live in its memory and are read on its metrics port", file=sys.stderr)  # fmt: skip
        return 2
    base = args.url or f"http://{_host(config.metrics.address)}:{config.metrics.port}"
    path = "/cases" if imei is None else f"/cases/{imei}"
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=10) as r:
            body: Any = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404 and imei is not None:
            return _print_case(None, imei, args)
        raise OSError(f"{base}{path}: HTTP {e.code}") from None
    if imei is None:
        return _print_list(body["cases"], args)
    return _print_case(body, imei, args)


def _host(address: str) -> str:
    if address in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_list(cases: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.status != "all":
        cases = [c for c in cases if c.get("status", "open") == args.status]
    if args.json:
        print(json.dumps({"cases": cases}))
        return 0
    for c in cases:
        rules = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in c["rules"].items())
        model = f"  {c['model']}" if c.get("model") else ""
        print(f"{c['imei']}  {c.get('status', 'open'):<6}  {c['action']:<8}  {len(c['imsis'])} IMSI(s)  "
              f"{_when(c['first'])} .. {_when(c['last'])}  {rules}{model}")  # fmt: skip
    print(f"{len(cases)} case(s)", file=sys.stderr)
    return 0


def _print_case(case: dict[str, Any] | None, imei: str, args: argparse.Namespace) -> int:
    if case is None:
        print(f"s13eir cases: no case for {imei}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(case))
        return 0
    print(f"IMEI      {case['imei']}" + (f"  ({case['model']}, {case['device_type']})" if case.get("model") else ""))
    print(
        f"status    {case.get('status', 'open')}" + (f", reopened {case['reopened']}x" if case.get("reopened") else "")
    )
    if case.get("closed"):
        c = case["closed"]
        print(f"closed    {_when(c['at'])} by {c['by']}: {c['note']}")
    print(f"action    {case['action']}")
    print(f"rules     {', '.join(f'{r} x{n}' for r, n in case['rules'].items())}")
    print(f"found     {_when(case['first'])} .. {_when(case['last'])}")
    print(f"IMSIs     {', '.join(case['imsis'])}")
    for d in case["details"]:
        print(f"  {d}")
    if case.get("actions"):
        print("list changes" + ("  (undone: later findings change no list)" if case.get("suppressed") else ""))
        for a in case["actions"]:
            who = f" {a['imsi']}" if a["imsi"] else ""
            print(f"  {a['op']} {a['list']}{who}  {a['state']}  ({a['source']})")
    print("evidence")
    for e in case["evidence"]:
        print(
            f"  {_when(e['t'])}  {e['imsi'] or '-':<15}  {e['peer']}  {e['rat']}"
            + (f"  SV {e['sv']}" if e["sv"] else "")
        )
    return 0
