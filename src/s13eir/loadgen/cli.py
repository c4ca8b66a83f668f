"""``s13eir load``: simulated MMEs that load-test an EIR and check every answer."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import random
import signal
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from s13eir.config import Config, ConfigError
from s13eir.config_loading import load_config
from s13eir.decision.model import UnknownPolicy
from s13eir.decision.policy import MalformedImeiPolicy, Policy
from s13eir.lists.formats import ListFormatError

from .amf import SbiUrlError, parse_sbi_url
from .client import LoadParams
from .echo import echo_process
from .imeis import Expectations, ImeiFileError, MixError, Workload, generate_workload, load_oracle, parse_mix
from .imeis import read_imeis_file as read_imeis
from .procs import new_event_loop, run_load
from .report import LiveView, exit_status, format_plain, render_table, summary
from .stats import Stats

__all__ = ["add_load_parser", "cmd_load", "load_main"]

EXIT_USAGE = 2
DEFAULT_MIX_LISTED = "black=0.01,grey=0.01,unknown=0.05,malformed=0.001"
DEFAULT_MIX_UNLISTED = "unknown=0.05,malformed=0.001"
_PLAIN_PROGRESS_S = 5.0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _seconds(allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not (value >= 0 if allow_zero else value > 0) or value > 86_400:
            raise argparse.ArgumentTypeError(f"{text} is out of range")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests per second") from None
    if not 0 < value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"{text} is out of range")
    return value


def _nap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of microseconds") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0 to 10000 µs)")
    return value


def add_load_parser(subparsers: Any) -> None:
    """Add ``load`` to the ``s13eir`` sub-commands (``subparsers`` from add_subparsers)."""
    p = subparsers.add_parser(
        "load",
        help="load-test an EIR with simulated MMEs and check every answer",
        description=(
            "Simulated MMEs (one TCP connection and Origin-Host each) send ECRs to an EIR, in a closed loop "
            "(--concurrency) or at a fixed rate (--rate), and check each answer against the verdict expected "
            "for its IMEI. Exit status 0 when there were no mismatches, timeouts or errors, 1 otherwise, "
            "2 for bad usage or configuration."
        ),
    )
    p.add_argument(
        "--peer",
        metavar="HOST:PORT",
        help="the EIR to load (default: the first listener of --config, else 127.0.0.1:3868)",
    )
    p.add_argument(
        "--sbi",
        metavar="URL",
        help="load the EIR's N5g-eir API (5G AMFs, HTTP/2 without TLS) at URL, e.g. http://127.0.0.1:8080, "
        "instead of S13: each of --mmes is then one HTTP/2 connection, --concurrency counts streams per "
        "connection; same workload and checks (200 status, 404 ERROR_EQUIPMENT_UNKNOWN = 5422, 400 = 5004)",
    )
    p.add_argument(
        "--mmes", type=_positive_int, default=1, metavar="N", help="simulated MMEs, one connection each (default 1)"
    )
    p.add_argument(
        "--realm",
        default="s13eir.test",
        help="the MMEs' Origin-Realm; MME i is mme{i}.REALM (default s13eir.test)",
    )
    loop = p.add_mutually_exclusive_group()
    loop.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="C",
        help="closed loop: requests kept outstanding per MME (the default, with C=8)",
    )
    loop.add_argument(
        "--rate",
        type=_rate,
        metavar="R",
        help="open loop: R requests/s in total, at fixed intended times spread over the MMEs; "
        "latency counts from the intended time, so a generator or EIR falling behind shows as latency",
    )
    p.add_argument(
        "--nap-us",
        type=_nap,
        default=0.0,
        metavar="N",
        help="open loop: sleep N µs between loop turns instead of polling, leaving the core idle part of the "
        "time; costs tens of µs of send lag and answer reading, both counted in the latency (default 0: poll)",
    )
    p.add_argument(
        "--doic",
        action="store_true",
        help="the MMEs speak RFC 7683 DOIC: every ECR announces it, and while the EIR's answers carry an "
        "overload report (OC-OLR) the MMEs do not send that percentage of their ECRs (counted as abated)",
    )
    p.add_argument("--duration", type=_seconds(False), default=10.0, metavar="S", help="measured seconds (default 10)")
    p.add_argument(
        "--warmup",
        type=_seconds(True),
        default=1.0,
        metavar="S",
        help="seconds of traffic before measuring, not counted (default 1)",
    )
    p.add_argument(
        "--procs",
        type=_positive_int,
        default=1,
        metavar="P",
        help="spread the MMEs over P processes (results merged at the end; default 1)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds(False),
        default=5.0,
        metavar="S",
        help="an ECR unanswered after S seconds is a timeout; also bounds connecting, CER and DPR (default 5)",
    )
    p.add_argument(
        "--requests", type=_positive_int, metavar="N", help="stop after N measured requests (default: no cap)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--imeis",
        metavar="FILE",
        help="CSV imei,expected[,imsi] sent in file order; expected is WHITELISTED, BLACKLISTED, GREYLISTED, "
        "UNKNOWN or a result code such as 5004; a row without IMSI is sent without User-Name",
    )
    source.add_argument(
        "--mix",
        metavar="SPEC",
        help="generated IMEIs, e.g. black=0.01,grey=0.01,unknown=0.05,malformed=0.001 (kinds: black, grey, white, "
        "exception, unknown, malformed; fractions or percentages); the rest are IMEIs on no list. Listed kinds "
        f"need --config. Default: {DEFAULT_MIX_LISTED} with --config, else {DEFAULT_MIX_UNLISTED}",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the EIR's configuration: its lists and policy give the listed IMEIs and every expected verdict "
        "(computed with s13eir's own decision engine), and its first listener the default --peer",
    )
    p.add_argument(
        "--unknown-imei",
        choices=[u.value for u in UnknownPolicy],
        default="whitelisted",
        help="without --config: the EIR's policy.unknown_imei, which decides the expected answer to unlisted IMEIs "
        "(default whitelisted)",
    )
    p.add_argument(
        "--malformed-imei",
        choices=[m.value for m in MalformedImeiPolicy],
        default="reject",
        help="without --config: the EIR's policy.malformed_imei (default reject, i.e. 5004)",
    )
    p.add_argument("--seed", type=int, help="seed for the IMEIs, IMSIs and ids drawn (default: random, reported)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="replay a trace of checks (t,imei,imsi,peer[,sv], as s13eir detect reads) in trace time instead: "
        "one MME per peer of the trace, each row an ECR at t/--speedup seconds",
    )
    p.add_argument("--speedup", type=float, default=1.0, metavar="X", help="with --trace: X times trace time")
    p.add_argument(
        "--no-live", action="store_true", help="plain output: no live display (also when stdout is not a terminal)"
    )
    p.add_argument(
        "--echo",
        action="store_true",
        help="ignore --peer and load a built-in stand-in EIR (answers WHITELISTED at once, in its own process) "
        "to measure the generator's own ceiling on this machine",
    )
    p.set_defaults(func=cmd_load)


class UsageError(Exception):
    pass


def _peer(args: argparse.Namespace) -> tuple[str, int]:
    if args.sbi is not None:
        if args.peer is not None or args.echo:
            raise UsageError("--sbi replaces --peer and --echo")
        host, port, _ = parse_sbi_url(args.sbi)
        return host, port
    spec = args.peer
    if spec is None:
        if args.config is None:
            return "127.0.0.1", 3868
        first = load_config(args.config).listen[0]
        return ("127.0.0.1" if first.address in ("0.0.0.0", "::") else first.address), first.port
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--peer: expected HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def _workload(args: argparse.Namespace, rng: random.Random) -> Workload:
    if args.echo:
        if args.imeis or args.mix or args.config:
            raise UsageError("--echo answers WHITELISTED to everything: --imeis, --mix and --config do not apply")
        return generate_workload({}, rng)
    if args.imeis:
        return read_imeis(args.imeis, rng)
    if args.config:
        config, oracle = load_oracle(args.config, rng)
        if args.sbi is None:
            _check_peers_listed(config, args)
        return generate_workload(parse_mix(args.mix if args.mix is not None else DEFAULT_MIX_LISTED), rng, oracle)
    expectations = Expectations(Policy(UnknownPolicy(args.unknown_imei), MalformedImeiPolicy(args.malformed_imei)))
    mix = parse_mix(args.mix if args.mix is not None else DEFAULT_MIX_UNLISTED)
    return generate_workload(mix, rng, None, expectations)


def _check_peers_listed(config: Config, args: argparse.Namespace) -> None:
    """Refuse to start MMEs the EIR of --config would refuse (3010 DIAMETER_UNKNOWN_PEER)."""
    if config.peers.allow_unknown:
        return
    listed = {p.origin_host.lower() for p in config.peers.list}
    hosts = [f"mme{i + 1}.{args.realm}" for i in range(args.mmes)]
    missing = [h for h in hosts if h.lower() not in listed]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UsageError(
            f"--config {args.config}: peers.list does not name {shown}; the EIR would refuse "
            f"{'them' if len(missing) > 1 else 'it'} with 3010 DIAMETER_UNKNOWN_PEER. "
            "Add the simulated MMEs (mmeN.REALM, see --realm) to peers.list or set peers.allow_unknown"
        )


def _params(args: argparse.Namespace, host: str, port: int, seed: int) -> LoadParams:
    return LoadParams(
        host=host,
        port=port,
        mmes=args.mmes,
        realm=args.realm,
        concurrency=args.concurrency or 8,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        timeout=args.timeout,
        requests=args.requests,
        procs=args.procs,
        seed=seed,
        sbi=args.sbi,
        nap_us=args.nap_us,
        doic=args.doic,
    )


def _described(params: LoadParams, args: argparse.Namespace, workload: Workload) -> dict[str, Any]:
    return {
        "peer": params.sbi if params.sbi is not None else f"{params.host}:{params.port}",
        "interface": "sbi" if params.sbi is not None else "s13",
        "mmes": params.mmes,
        "realm": params.realm,
        "mode": "closed" if params.rate is None else "open",
        "concurrency": params.concurrency if params.rate is None else None,
        "rate": params.rate,
        "nap_us": params.nap_us if params.rate is not None else None,
        "doic": params.doic,
        "duration_s": params.duration,
        "warmup_s": params.warmup,
        "procs": min(params.procs, params.mmes),
        "timeout_s": params.timeout,
        "requests": params.requests,
        "seed": params.seed,
        "imeis": args.imeis,
        "mix": {k: round(v, 6) for k, v in workload.mix.items()} or None,
        "config": args.config,
        "echo": bool(args.echo),
        "combinations": len(workload.combos),
    }


async def load_main(args: argparse.Namespace, *, handle_signals: bool = False, freeze_gc: bool = False) -> int:
    """``s13eir load`` in the running event loop (the tests call this next to an in-process EIR).

    ``freeze_gc`` moves everything built so far (the workload above all) out of the cyclic
    collector's reach, so that its full collections do not pause the run; only for a process
    of its own, since whatever is frozen is never collected."""
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    try:
        host, port = _peer(args) if not args.echo or args.sbi else ("127.0.0.1", 0)
        workload = _workload(args, random.Random(seed))
    except (UsageError, SbiUrlError, MixError, ImeiFileError, ConfigError, ListFormatError) as exc:
        print(f"s13eir load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        echo = await _start_echo() if args.echo else None
    except OSError as exc:
        print(f"s13eir load: --echo: {exc}", file=sys.stderr)
        return 1
    if echo is not None:
        port = echo[1]
    params = _params(args, host, port, seed)
    if freeze_gc:
        gc.freeze()
    described = _described(params, args, workload)
    live = not args.no_live and sys.stdout.isatty()
    console = Console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    mode = f"open loop {params.rate:g}/s" if params.rate is not None else f"closed loop {params.concurrency} per MME"
    if params.sbi is not None:
        mode = mode.replace("per MME", "per AMF")
    who = (
        f"{params.mmes} AMF(s) -> {params.sbi}"
        if params.sbi is not None
        else f"{params.mmes} MME(s) -> {params.host}:{params.port}"
    )
    headline = f"{who}, {mode}, {params.duration:g} s (+{params.warmup:g} s warm-up), seed {seed}"
    try:
        if live:
            with LiveView(console, headline) as view:
                stats = await run_load(params, workload, stop=stop, progress=view.update)
        else:
            print(f"s13eir load: {headline}", file=sys.stderr)
            stats = await run_load(params, workload, stop=stop, progress=_PlainProgress())
    finally:
        if handle_signals:
            loop.remove_signal_handler(signal.SIGINT)
        if echo is not None:
            await _stop_echo(echo[0])
    generator = {"event_loop": type(loop).__module__.split(".")[0], "python": platform.python_version()}
    result = summary(stats, described, generator)
    result["interrupted"] = stop.is_set()  # Ctrl-C: the counts cover the run up to then
    if live:
        console.print(render_table(result))
    else:
        print(format_plain(result))
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        except OSError as exc:
            print(f"s13eir load: cannot write {args.json}: {exc}", file=sys.stderr)
            return 1
    return exit_status(result)


class _PlainProgress:
    """One line on stderr every few seconds, for logs."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, stats: Stats, phase: str) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next:
            return
        self._next = now + _PLAIN_PROGRESS_S
        print(
            f"s13eir load: {phase}: {stats.requests} requests, {stats.answers} answers, "
            f"p99 {stats.latency.percentile(99) / 1000:.3f} ms, {stats.mismatches} mismatches, "
            f"{stats.timeouts} timeouts, {stats.error_total} errors",
            file=sys.stderr,
        )


async def _start_echo() -> tuple[Any, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=echo_process, args=(child,), daemon=True)
    proc.start()
    child.close()
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, parent.poll, 30.0):
        proc.terminate()
        raise OSError("the stand-in EIR did not start within 30 s")
    try:
        return (proc, parent), int(parent.recv())
    except EOFError:
        raise OSError("the stand-in EIR exited at start") from None


async def _stop_echo(handle: tuple[Any, Any]) -> None:
    proc, conn = handle
    with contextlib.suppress(OSError):
        conn.send("stop")
    await asyncio.get_running_loop().run_in_executor(None, proc.join, 5.0)
    if proc.is_alive():
        proc.terminate()
    conn.close()


def cmd_load(args: argparse.Namespace) -> int:
    """Entry point for ``s13eir load`` (uvloop when installed)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(load_main(args, handle_signals=True, freeze_gc=True))
