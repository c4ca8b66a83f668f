"""``s13eir tacs import FILE [--force]`` and ``s13eir tacs status``: the GSMA TAC database
in Redis, for every node of the cluster (:mod:`s13eir.tac_store`).

Exit codes: 0 done; 1 refused by the guards or Redis unreachable; 2 a file that does not
read (file:line: message) or a configuration without the Redis store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from redis.exceptions import RedisError

from .config import Config
from .detection.tac_db import TacFileError
from .tac_store import TacGuardError, import_tac_db, load_tac_file, redis_generation


def add_tacs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tacs", help="the GSMA TAC database in Redis, shared by the EIR nodes")
    tacs = p.add_subparsers(dest="tacs_command", required=True)
    imp = tacs.add_parser("import", help="replace the TAC database by a GSMA TAC file (guards, atomic switch)")
    imp.add_argument("file", help="pipe-separated, with the GSMA header (TAC|Marketing Name|...|Device Type)")
    imp.add_argument("--config", default="config/eir.yaml")
    imp.add_argument("--force", action="store_true", help="import even if it drops more than the guards allow")
    imp.add_argument("--max-removals", type=float, default=0.05, help="the share of TACs it may drop (default 0.05)")
    st = tacs.add_parser("status", help="the TAC database the nodes read")
    st.add_argument("--config", default="config/eir.yaml")


def cmd_tacs(args: argparse.Namespace) -> int:
    from .config_loading import load_config

    config = load_config(args.config)
    if config.store.backend != "redis":
        print("s13eir tacs: the TAC database is shared through Redis (store.backend: redis); an embedded "
              "node reads detection.tac_database", file=sys.stderr)  # fmt: skip
        return 2
    try:
        return asyncio.run(_run(config, args))
    except (TacFileError, OSError) as exc:
        print(f"s13eir tacs: {exc}", file=sys.stderr)
        return 2
    except TacGuardError as exc:
        print(f"s13eir tacs: refused: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"s13eir tacs: Redis: {exc}", file=sys.stderr)
        return 1


async def _run(config: Config, args: argparse.Namespace) -> int:
    from .backends.redis_client import connect

    r: Any = connect(config.store.redis, timeout_s=60.0)
    prefix = config.store.redis.prefix
    try:
        if args.tacs_command == "status":
            gen = await redis_generation(r, prefix)
            info = {} if gen is None else await r.hgetall(f"{prefix}:tacdb:g:{gen}:info")
            print(json.dumps({"generation": gen, **{k.decode(): v.decode() for k, v in info.items()}}))
            return 0
        db = load_tac_file(args.file)  # the whole file reads, or nothing is written
        gen, before = await import_tac_db(r, prefix, db, max_removals=args.max_removals, force=args.force)
        print(json.dumps({"generation": gen, "tacs": len(db), "before": before, "source": db.source}))
        return 0
    finally:
        await r.aclose()
