"""Serve N5g-eir alone from a configuration: ``python -m s13eir.sbi --config config/eir.yaml``.

The node serves N5g-eir beside S13 once its ``sbi:`` section is wired; this runner serves
only the HTTP/2 side (same lists, policy, logs), for benchmarks (h2load) and for trying
the API. It stops on SIGINT/SIGTERM (deregistering from the NRF if one is configured).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from s13eir.config import ConfigError
from s13eir.config_loading import load_config
from s13eir.lists.formats import ListFormatError, ListSpec, load_lists
from s13eir.observability.logs import configure_logging, get_logger
from s13eir.observability.metrics import Metrics
from s13eir.sbi.n5g_eir import lists_check
from s13eir.sbi.report import outcome_logger
from s13eir.sbi.server import start_sbi


async def _serve(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(config.logging.level, config.logging.format)
    log = get_logger("s13eir.sbi")
    if config.sbi is None:
        print(f"{config_path}: no sbi: section", file=sys.stderr)
        return 2
    try:
        specs = [ListSpec(s.path, s.format, s.list) for s in config.store.lists]
        lists = load_lists(specs, config.store.bloom_fp_rate)
    except (ListFormatError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    policy = config.policy.decision_policy()
    server = await start_sbi(
        config.sbi,
        lists_check(lambda: lists, lambda: policy),
        outcome_logger(log, log_whitelisted=config.logging.log_whitelisted, mask=config.logging.mask_imsi),
        Metrics(),
        policy=config.policy,
        node_name=config.node.origin_host,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s13eir.sbi", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML configuration with an sbi: section")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop

            return uvloop.run(_serve(args.config))
        except ImportError:
            pass
    return asyncio.run(_serve(args.config))


if __name__ == "__main__":
    sys.exit(main())
