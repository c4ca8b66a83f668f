"""The ``s13eir`` command: serve, check, config check, load, lists, sync, detect, cases, tacs.

Start-up time matters here (``--version``, ``check`` and ``config check`` are run by hand
and by scripts), so this module imports only the standard library at the top: each
command imports what it needs when it runs, ``check`` no more than s13eir's own Diameter
codec. ``load``, ``lists`` and ``sync`` define their options in their own modules, which
are imported only when that command is the one on the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .config import Config

EXIT_OK = 0
EXIT_FAILURE = 1  # the EIR could not be asked, or answered with an error
EXIT_CONFIG = 2  # bad configuration or usage
DEFAULT_CONFIG = "config/eir.yaml"


class _Command:
    """A sub-command whose options are defined by the module that runs it."""

    def __init__(self, module: str, add_parser: str, handler: str, help: str) -> None:
        self.module = module
        self.add_parser = add_parser
        self.handler = handler
        self.help = help  # what the module's parser says: the line shown by ``s13eir --help``

    def add_to(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        getattr(import_module(self.module), self.add_parser)(subparsers)

    def run(self, args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(import_module(self.module), self.handler)
        return handler(args)


MODULE_COMMANDS = {
    "load": _Command(
        "s13eir.loadgen.cli",
        "add_load_parser",
        "cmd_load",
        "load-test an EIR with simulated MMEs and check every answer",
    ),
    "lists": _Command(
        "s13eir.sync.lists_cli",
        "add_lists_parser",
        "cmd_lists",
        "the lists in Redis shared by the EIR nodes (store.backend: redis)",
    ),
    "detect": _Command(
        "s13eir.detection_cli",
        "add_detect_parser",
        "cmd_detect",
        "run the clone and tamper detection rules over a trace of checks",
    ),
    "cases": _Command(
        "s13eir.cases_cli",
        "add_cases_parser",
        "cmd_cases",
        "the clone and tamper detection cases of the running nodes",
    ),
    "tacs": _Command(
        "s13eir.tacs_cli",
        "add_tacs_parser",
        "cmd_tacs",
        "the GSMA TAC database in Redis, shared by the EIR nodes",
    ),
    "sync": _Command(
        "s13eir.sync.process",
        "add_sync_parser",
        "cmd_sync",
        "keep the lists in Redis in step with the master list (snapshots + MQTT feed)",
    ),
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line: the first word that is not an option
    (the top level has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole parser for the ``s13eir`` built-in commands; of ``load``, ``lists`` and
    ``sync`` only the one named in ``argv`` gets its options (the others are listed)."""
    p = argparse.ArgumentParser(prog="s13eir", description="Equipment Identity Register for S13/S13' (TS 29.272)")
    p.add_argument("--version", action="version", version=f"s13eir {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the EIR node")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML configuration (default {DEFAULT_CONFIG})")
    serve.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the ports (SO_REUSEPORT); default 1"
    )
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--shared-lists", default=None, help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="ask an EIR about one IMEI, as an MME would (CER, ECR, DPR)")
    check.add_argument("--config", default=None, help="take --peer and the realm from this configuration")
    check.add_argument("--peer", default=None, help="HOST:PORT of the EIR (default: the config's first listener)")
    check.add_argument("--imei", required=True, help="14 or 15 digits (TAC+SNR[+check digit])")
    check.add_argument("--imsi", default=None, help="sent as User-Name")
    check.add_argument("--sv", default=None, help="Software-Version (2 digits)")
    check.add_argument("--origin-host", default="mme.s13eir.test")
    check.add_argument("--origin-realm", default="s13eir.test")
    check.add_argument("--timeout", type=float, default=5.0)
    check.add_argument("--json", action="store_true", help="print the answer as JSON")

    chosen = _command_word(argv)
    for name, command in MODULE_COMMANDS.items():
        if name == chosen:
            command.add_to(sub)
        else:
            sub.add_parser(name, help=command.help)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_check = cfg_sub.add_parser(
        "check", help="validate a configuration, the files it names, its dictionaries and its lists"
    )
    cfg_check.add_argument("path", nargs="?", default=None)
    cfg_check.add_argument("--config", dest="config_opt", default=None, help="same as PATH")
    return p


def _load(path: str) -> Config:
    from .config_loading import load_config

    return load_config(path)


def _peer(args: argparse.Namespace) -> tuple[str, int]:
    spec = args.peer
    if spec is None:
        if args.config is None:
            return "127.0.0.1", 3868
        first = _load(args.config).listen[0]
        host = "127.0.0.1" if first.address in ("0.0.0.0", "::") else first.address
        return host, first.port
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        from .config import ConfigError

        raise ConfigError("--peer", f"expected HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def cmd_check(args: argparse.Namespace) -> int:
    import asyncio

    from .checker import ClientError, check_imei

    host, port = _peer(args)
    try:
        result = asyncio.run(
            check_imei(host, port, args.imei, args.imsi, args.sv, args.origin_host, args.origin_realm, args.timeout)
        )
    except ClientError as exc:
        print(f"s13eir check: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        import json

        print(json.dumps({"imei": args.imei, "imsi": args.imsi, **result.as_dict()}))
    else:
        print(f"{args.imei}: {result.verdict}")
    return EXIT_OK if result.result_code == 2001 or result.experimental_result_code == 5422 else EXIT_FAILURE


def cmd_config_check(args: argparse.Namespace) -> int:
    from .config_files import check_files, named_files
    from .diameter import dictionary
    from .lists.configured import load_snapshot

    path = args.path or args.config_opt or DEFAULT_CONFIG
    config = _load(path)
    check_files(config, path)  # every file it names, including those only `s13eir sync` reads
    d = dictionary.load(config.diameter.dictionaries)
    snapshot = load_snapshot(config)  # what the node loads at start-up
    counts = ", ".join(f"{k} {v}" for k, v in snapshot.counts().items())
    print(f"{path}: ok")
    print(f"  node {config.node.origin_host} / {config.node.origin_realm}")
    print(f"  listen {', '.join(f'{x.transport}://{x.address}:{x.port}' for x in config.listen)}")
    print(f"  peers {len(config.peers.list)} configured, allow_unknown={config.peers.allow_unknown}")
    print(f"  dictionary {len(d.avps)} AVPs, {len(d.commands)} commands")
    print(f"  lists: {counts}")
    print(f"  files: {len(named_files(config))} named, all readable")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .config_files import check_files

    config = _load(args.config)
    # Before anything starts: a missing certificate is named here, not met as a bare
    # "[Errno 2]" once the lists are loaded and the Diameter port is open.
    check_files(config, args.config, node_only=True)

    from .node import run_node
    from .observability.logs import configure_logging

    configure_logging(config.logging.level, config.logging.format)
    if args.workers > 1 and args.worker_index is None:
        from .supervisor import Supervisor

        return Supervisor(config, args.config, args.workers, ["--no-uvloop"] if args.no_uvloop else []).run()
    if args.worker_index:
        import msgspec

        # Worker i serves its own metrics on port + i: scrapes must not land on a random worker.
        metrics = msgspec.structs.replace(config.metrics, port=config.metrics.port + args.worker_index)
        config = msgspec.structs.replace(config, metrics=metrics)
    run_node(
        config,
        args.config,
        use_uvloop=not args.no_uvloop,
        reuse_port=args.reuse_port,
        shared_lists=args.shared_lists,
        worker_index=args.worker_index,
        parent_fd=args.parent_fd,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "load" and getattr(args, "trace", None):
            from .replay import cmd_replay

            return cmd_replay(args, *_peer(args))
        if args.command in MODULE_COMMANDS:
            return MODULE_COMMANDS[args.command].run(args)
        return cmd_config_check(args)
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        for line in str(exc).splitlines():  # several files missing: one line each
            print(f"s13eir: {line}", file=sys.stderr)
        return code


def _exit_code(exc: Exception) -> int | None:
    """The exit status for an error the commands report in one line; None for a bug.
    (Imported here, on the error path: a command that never loaded these modules
    cannot have raised their errors, and should not pay for importing them.)"""
    from .config import ConfigError
    from .diameter.dictionary import DictionaryError
    from .lists.formats import ListFormatError

    if isinstance(exc, ConfigError | ListFormatError | DictionaryError):
        return EXIT_CONFIG
    node = sys.modules.get("s13eir.node")  # only a started node raises StartError
    if isinstance(exc, OSError) or (node is not None and isinstance(exc, node.StartError)):
        return EXIT_FAILURE  # e.g. the listen port is taken
    return None


if __name__ == "__main__":
    sys.exit(main())
