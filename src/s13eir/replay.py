"""``s13eir load --trace FILE [--speedup X]``: a trace of checks (t,imei,imsi,peer[,sv]),
replayed live against an EIR in trace time: each peer of the trace becomes one MME (its
Origin-Host, one connection, the CER and DWR/DPR of the initiator core), and each row is
sent as an ECR at ``t / speedup`` seconds from the start. The same trace that
``s13eir detect`` reads offline, so that a node's live detection can be compared with it.

Each MME sends its rows in order and waits for each answer (a trace's rate per MME is an
attach log's, not a load test's); how late the rows left against their schedule is
reported. Exit status 0 when every row was answered, 1 otherwise, 2 for a bad trace.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .checker import ClientError, Initiator, read_answer
from .detection.observation import Observation, PeerSite, Rat
from .detection.trace import TraceError, read_trace
from .diameter.constants import DISCONNECT_REBOOTING
from .diameter.initiator import Messages
from .loadgen import wire

_MASK32 = 0xFFFFFFFF


class _AnyPeer(Mapping[str, PeerSite]):
    """Every Origin-Host is a peer here: the EIR decides whom it admits."""

    _peer = PeerSite(Rat.EUTRAN, None)

    def __getitem__(self, key: str) -> PeerSite:
        return self._peer

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def read_rows(path: str) -> list[Observation]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(read_trace(f, path, _AnyPeer()))


async def _mme(peer: str, rows: list[Observation], host: str, port: int, realm: str, start: float,
               speedup: float, timeout: float, out: dict[str, Any]) -> None:  # fmt: skip
    ids = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def next_id() -> int:
        return next(ids) & _MASK32

    messages = Messages(peer, realm, int(time.time()) & _MASK32)
    mme = Initiator(messages, timeout)
    opened = await mme.connect(host, port, lambda ip: messages.cer(ip, next_id(), next_id(), product="s13eir-replay"))
    loop = asyncio.get_running_loop()
    encoder = wire.EcrEncoder(peer, realm, opened.origin_realm or realm, int(time.time()), next_id(), next_id())
    try:
        for obs in rows:
            due = start + obs.t / speedup
            late = loop.time() - due
            if late < 0:
                await asyncio.sleep(-late)
                late = 0.0
            out["max_late_s"] = max(out["max_late_s"], late)
            frame: list[bytes] = []
            encoder.encode(wire.ecr_body(obs.imei15 or obs.imei14, obs.imsi, obs.sv), frame)
            sent = loop.time()
            try:
                answer = read_answer(await mme.request(b"".join(frame)))
            except ClientError as exc:
                out["errors"].append(f"{peer}: {exc}")
                return
            out["latency_s"].append(loop.time() - sent)
            out["answered"] += 1
            out["verdicts"][answer.verdict] = out["verdicts"].get(answer.verdict, 0) + 1
    finally:
        await mme.disconnect(DISCONNECT_REBOOTING, next_id(), next_id())


async def replay(path: str, host: str, port: int, realm: str, speedup: float, timeout: float) -> dict[str, Any]:
    rows = read_rows(path)
    by_peer: dict[str, list[Observation]] = {}
    for obs in rows:
        by_peer.setdefault(obs.peer, []).append(obs)
    out: dict[str, Any] = {"rows": len(rows), "mmes": len(by_peer), "answered": 0, "verdicts": {},
                           "errors": [], "latency_s": [], "max_late_s": 0.0}  # fmt: skip
    start = asyncio.get_running_loop().time() + 0.5  # the CERs first
    results = await asyncio.gather(
        *(
            _mme(peer, peer_rows, host, port, realm, start, speedup, timeout, out)
            for peer, peer_rows in by_peer.items()
        ),
        return_exceptions=True,
    )
    out["errors"] += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    latencies = sorted(out.pop("latency_s"))
    out["p99_ms"] = round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 3) if latencies else None
    out["max_late_s"] = round(out["max_late_s"], 3)
    return out


def cmd_replay(args: argparse.Namespace, host: str, port: int) -> int:
    if not args.speedup > 0:
        print("s13eir load: --speedup must be above 0", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(replay(args.trace, host, port, args.realm, args.speedup, args.timeout))
    except TraceError as exc:
        print(f"s13eir load: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"s13eir load: {exc.filename or args.trace}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    print(f"{result['answered']} of {result['rows']} rows answered by {host}:{port} from {result['mmes']} MME(s); "
          f"verdicts {result['verdicts']}; p99 {result['p99_ms']} ms; rows at most {result['max_late_s']} s late"
          + (f"; errors: {result['errors']}" if result["errors"] else ""))  # fmt: skip
    return 0 if result["answered"] == result["rows"] and not result["errors"] else 1
