"""``s13eir lists ...``: import a snapshot, apply a DIRBS delta, roll back, show status.

Exit codes: 0 done (also "unchanged"); 1 refused by the guards (also a dry run that
would be refused), the writer lock held by another process, Redis unreachable or
another failure; 2 bad input (``file:line: message``) or configuration.

The writing commands take the writer lock without waiting: a running ``s13eir sync``
(or another import) holds it, and the message names the holder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from redis.exceptions import RedisError

from s13eir.backends.redis_client import AnyRedis, connect
from s13eir.config import Config, ConfigError
from s13eir.config_loading import load_config
from s13eir.decision.model import ListKind
from s13eir.lists.formats import FORMATS, ListFormatError, ListSpec
from s13eir.lists.redis_layout import ALL_LISTS, RULES, k_seq
from s13eir.observability.redact import redact_url
from s13eir.sync.deltas import DELTA_KINDS, DeltaKind, parse_delta
from s13eir.sync.imports import count_lines
from s13eir.sync.lock import WriterError, writer_lock
from s13eir.sync.writer import FORMATS_FOR_LIST, ListWriter

__all__ = ["add_lists_parser", "cmd_lists"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INPUT: Final = 2
DEFAULT_CONFIG: Final = "config/eir.yaml"  # as s13eir.cli's (not imported: cli imports this module)
WRITER_TIMEOUT_S: Final = 120.0  # one script may carry thousands of rows; a node's 50 ms budget would not do

DEFAULT_FORMAT: Final = {"black": "dirbs-blacklist", "grey": "dirbs-blacklist", "white": "dirbs-blacklist",
                         "exceptions": "dirbs-exceptions", RULES: "rules-yaml"}  # fmt: skip


def add_lists_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``lists`` and its subcommands; ``args.lists_command`` names the subcommand and
    ``args.handler`` is :func:`cmd_lists`."""
    lists = subparsers.add_parser("lists", help="the lists in Redis shared by the EIR nodes (store.backend: redis)")
    lists.set_defaults(handler=cmd_lists)
    sub = lists.add_subparsers(dest="lists_command", required=True)

    def config_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML configuration (default {DEFAULT_CONFIG})")

    imp = sub.add_parser("import", help="replace a list by a full snapshot (new generation, guards, atomic switch)")
    imp.add_argument("file", help="the snapshot file")
    imp.add_argument("--list", required=True, choices=ALL_LISTS, dest="list_name", help="the list it replaces")
    imp.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default=None,
        help="file format (default: dirbs-blacklist for black/grey/white, dirbs-exceptions, rules-yaml)",
    )
    imp.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    imp.add_argument("--force", action="store_true", help="import even if the size or removal guards refuse")
    config_opt(imp)

    delta = sub.add_parser("apply-delta", help="apply a DIRBS delta file (blocked/unblocked/changed/added/removed)")
    delta.add_argument("file")
    delta.add_argument("--kind", choices=DELTA_KINDS, default=None, help="event type (default: from the file name)")
    delta.add_argument(
        "--list",
        choices=("black", "grey", "white"),
        default="black",
        dest="list_name",
        help="list a blacklist delta applies to (default black)",
    )
    config_opt(delta)

    rb = sub.add_parser("rollback", help="make a list's previous generation current again")
    rb.add_argument("--list", required=True, choices=ALL_LISTS, dest="list_name")
    config_opt(rb)

    st = sub.add_parser("status", help="generations, counts, sequence numbers and feeds")
    st.add_argument("--json", action="store_true", help="print as JSON")
    config_opt(st)
    return lists


def _err(message: str) -> None:
    print(f"s13eir lists: {message}", file=sys.stderr)


def cmd_lists(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_INPUT
    if cfg.store.backend != "redis" and args.lists_command != "status":
        _err(f"note: store.backend is {cfg.store.backend!r} in {args.config}: nodes with it do not read Redis")
    try:
        return asyncio.run(_run(args, cfg))
    except ListFormatError as exc:
        _err(str(exc))
        return EXIT_INPUT
    except ValueError as exc:  # a url or argument the writer cannot use
        _err(str(exc))
        return EXIT_INPUT
    except WriterError as exc:
        _err(str(exc))
        return EXIT_FAILED
    except (RedisError, OSError) as exc:
        _err(f"Redis at {redact_url(cfg.store.redis.url)}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted; the current generations are unchanged")
        return EXIT_FAILED


async def _run(args: argparse.Namespace, cfg: Config) -> int:
    r = connect(cfg.store.redis, timeout_s=WRITER_TIMEOUT_S)
    try:
        if args.lists_command == "status":
            return await _status(r, cfg, args.json)
        prefix = cfg.store.redis.prefix
        async with writer_lock(r, prefix, cfg.sync.lock_ttl_s, wait=False) as lock:
            writer = ListWriter(r, prefix, lock=lock, bloom_fp_rate=cfg.store.bloom_fp_rate)
            if args.lists_command == "import":
                return await _import(writer, args, cfg)
            if args.lists_command == "apply-delta":
                return await _apply_delta(writer, args)
            if args.lists_command == "rollback":
                g = await writer.rollback(args.list_name)
                print(f"{args.list_name}: generation {g} is current again")
                return EXIT_OK
        raise ValueError(f"unknown lists command {args.lists_command!r}")
    finally:
        await r.aclose()


def _spec(args: argparse.Namespace) -> ListSpec:
    list_name: str = args.list_name
    fmt = args.format or DEFAULT_FORMAT[list_name]
    if fmt not in FORMATS_FOR_LIST[list_name]:
        allowed = ", ".join(FORMATS_FOR_LIST[list_name])
        raise ListFormatError(args.file, 0, f"--format {fmt} cannot make the {list_name} list (allowed: {allowed})")
    kind = ListKind(list_name) if fmt == "dirbs-blacklist" else None
    return ListSpec(args.file, fmt, kind)


async def _import(writer: ListWriter, args: argparse.Namespace, cfg: Config) -> int:
    spec = _spec(args)
    total = await asyncio.to_thread(count_lines, spec.path)
    with _progress(f"{args.list_name} <- {spec.path}", total) as progress:
        report = await writer.import_snapshot(
            spec, args.list_name, dry_run=args.dry_run, force=args.force, guards=cfg.sync.guards, progress=progress
        )
    print(report.summary())
    return EXIT_FAILED if report.status == "refused" else EXIT_OK


async def _apply_delta(writer: ListWriter, args: argparse.Namespace) -> int:
    kind: DeltaKind | None = args.kind
    event, changes = await asyncio.to_thread(parse_delta, args.file, kind, list_name=args.list_name)
    before = int(await writer.r.get(k_seq(writer.p)) or 0)
    seq = await writer.apply_changes(changes)
    span = f"seq {before + 1}..{seq}" if changes else "nothing to do"
    print(f"{args.file}: {event}: {len(changes)} changes applied ({span})")
    return EXIT_OK


async def _status(r: AnyRedis, cfg: Config, as_json: bool) -> int:
    status = await ListWriter(r, cfg.store.redis.prefix).status()
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"redis {redact_url(cfg.store.redis.url)} prefix {cfg.store.redis.prefix!r}: last seq {status['seq']}")
    for name, entry in status["lists"].items():
        cur, prev = entry["current"], entry["previous"]
        if cur is None:
            print(f"  {name:<10} no generation")
            continue
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cur["created"])) if cur["created"] else "?"
        back = f", previous {prev['generation']} ({prev['count']} entries)" if prev else ", no previous"
        print(
            f"  {name:<10} generation {cur['generation']}: {cur['count']} entries, checksum {cur['checksum']},"
            f" created {created} from {cur['source'] or '(changes only)'}, seq {cur['seq']}{back}"
        )
    for feed, seq in sorted(status["feeds"].items()):
        print(f"  feed {feed}: seq {seq}")
    stream = status["stream"]
    print(f"  stream: {stream['length']} records from {stream['first_id'] or '-'}")
    if status["lock"]:
        print(f"  writer lock held by {status['lock']}")
    return EXIT_OK


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress callback: a rich bar on a terminal's stderr, else a line every 5 s."""
    if sys.stderr.isatty():
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:
            pass
        else:
            columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn()]  # fmt: skip
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(label, total=total or None)
                yield lambda rows: bar.update(task, completed=rows)
            return
    start = last = time.monotonic()

    def plain(rows: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 5.0:
            last = now
            share = f" ({rows / total:.0%})" if total else ""
            print(f"{label}: {rows} rows{share}, {rows / (now - start):,.0f} rows/s", file=sys.stderr)

    yield plain
