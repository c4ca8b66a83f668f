"""The detection worker: a process of its own, beside the node, that runs the rules
(:class:`DetectionEngine`) over the batches the node drains, at a lower CPU priority
(``detection.worker_priority``), so that detection never takes the node's loop or its core
from answering. Started by the node's supervised detection task, one per node process.

The node and the worker speak over a socket pair, in frames of a 4-byte length and a
MessagePack body: first the node's parameters (the rules, the peers' radio accesses and
locations, Redis when detection is shared), then, in lock step, a batch
``[now, [check, ...]]`` and its reply (the counters and the findings). The worker exits
when the node closes its end.

    python -m s13eir.detection_worker FD
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError

from .config import RedisConfig
from .detection.detector import Finding
from .detection.observation import Location, Rat
from .detection.rules import DetectionConfig

_LEN = struct.Struct(">I")
TAC_REFRESH_S = 30.0  # how often the TAC database in Redis is looked at for a new generation
MAX_FRAME = 256 << 20


class Reply(msgspec.Struct):
    """The worker's answer to one batch: its counters so far and the batch's findings."""

    observed: int
    store_dropped: int
    store_error: str | None
    conflicts: int
    unresolved: int
    devices: int
    findings: list[Finding]


reply_decoder = msgspec.msgpack.Decoder(Reply)


def frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    if n > MAX_FRAME:
        raise ValueError(f"a detection frame of {n} bytes")
    return await reader.readexactly(n)


def parameters(detection: DetectionConfig, rats: dict[str, Rat], locations: dict[str, Location],
               redis: RedisConfig | None, priority: str,
               tacs_from_redis: RedisConfig | None = None) -> bytes:  # fmt: skip
    return msgspec.msgpack.encode({
        "tacs_from_redis": msgspec.to_builtins(tacs_from_redis) if tacs_from_redis is not None else None,
        "detection": msgspec.to_builtins(detection),
        "rats": {host: rat.value for host, rat in rats.items()},
        "locations": {host: [loc.region, loc.lat, loc.lon] for host, loc in locations.items()},
        "redis": msgspec.to_builtins(redis) if redis is not None else None,
        "priority": priority,
    })  # fmt: skip


def lower_priority(priority: str) -> None:
    """SCHED_IDLE where the kernel has it (Linux), else nice 19; or nice 10; or nothing."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):
            os.nice(19)
    elif priority == "low":
        os.nice(10)


async def serve(sock: socket.socket) -> None:
    from .detection_engine import DetectionEngine
    from .detection_shared import SharedDetection

    reader, writer = await asyncio.open_unix_connection(sock=sock)
    params: dict[str, Any] = msgspec.msgpack.decode(await read_frame(reader))
    lower_priority(params["priority"])
    config = msgspec.convert(params["detection"], DetectionConfig)
    rats = {host: Rat(v) for host, v in params["rats"].items()}
    locations = {host: Location(r, lat, lon) for host, (r, lat, lon) in params["locations"].items()}
    from .backends.redis_client import connect
    from .detection.detector import Detector
    from .tac_store import TacSource

    tac_redis, tac_prefix = None, ""
    if params["tacs_from_redis"] is not None:
        tcfg = msgspec.convert(params["tacs_from_redis"], RedisConfig)
        tac_redis, tac_prefix = connect(tcfg, timeout_s=10.0), tcfg.prefix
    tacs = TacSource(config.tac_database, tac_redis, tac_prefix)
    with contextlib.suppress(RedisError, OSError):  # Redis away: the TACs come with the next look
        await tacs.refresh()
    next_tacs = time.monotonic() + TAC_REFRESH_S
    shared = None
    if params["redis"] is not None:
        rcfg = msgspec.convert(params["redis"], RedisConfig)
        shared = SharedDetection(connect(rcfg, timeout_s=2.0), rcfg.prefix, Detector(config, locations, tacs.info))
    engine = DetectionEngine(config, rats, locations, shared, tacs.info)
    encode = msgspec.msgpack.Encoder().encode
    try:
        while True:
            try:
                body = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return  # the node is gone
            now, batch = msgspec.msgpack.decode(body)
            if time.monotonic() >= next_tacs:  # a new TAC database imported meanwhile
                next_tacs = time.monotonic() + TAC_REFRESH_S
                with contextlib.suppress(RedisError, OSError):
                    await tacs.refresh()
            found = await engine.process(batch, now)
            reply = Reply(engine.observed, engine.store_dropped, engine.store_error,
                          shared.conflicts if shared is not None else 0, shared.unresolved if shared is not None else 0,
                          engine.devices, found)  # fmt: skip
            writer.write(frame(encode(reply)))
            await writer.drain()
    finally:
        if shared is not None:
            await shared.redis.aclose()
        if tac_redis is not None:
            await tac_redis.aclose()
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    sock = socket.socket(fileno=int(args[0]))
    asyncio.run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
