"""Detection in a running node: the checks the answer path left in the recorder are
drained (every 20 ms to the worker, 100 ms on the node's loop), off the answer path, to
the rules (:mod:`s13eir.detection_engine`), which run in the detection worker process
(:mod:`s13eir.detection_worker`; with ``detection.worker: false`` on the node's loop),
and their findings kept as cases,
counted per rule and served on the metrics port (``/cases``, ``/cases/<imei>``).
The worker is the supervised task's child: when it dies the task fails, is logged,
counted and restarted with a new worker, and /readyz says so meanwhile.

With the embedded store the state and the cases are the node's own. With Redis
(``store.backend: redis``) they are the cluster's (:mod:`s13eir.detection_shared`): every
node's checks of one IMEI meet in one state, a finding is made once, and any node serves
every case. A finding whose rule's action is ``notify``, ``greylist`` or ``block`` is
published to the fraud desk (the events broker); ``greylist`` and ``block`` also ask the
writer for the list change, recorded on the case (:meth:`SharedDetection.add_cases`,
applied by :mod:`s13eir.sync.detection_actions`), which needs the Redis store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .backends.redis_client import AnyRedis
from .config import Config
from .decision.masking import mask_imsi
from .detection.cases import Case, Cases, masked
from .detection.detector import Detector, Finding
from .detection.recorder import Recorder
from .detection.rules import Action
from .detection_engine import DetectionEngine
from .detection_shared import RedisError, SharedDetection
from .detection_worker import Reply, frame, parameters, read_frame, reply_decoder
from .sightings.publisher import SightingPublisher
from .tac_store import TacSource

DRAIN_EVERY_S = 0.1
BATCH = 5000  # checks per turn of the loop, between yields (on the node's loop)
# To the worker, small frames often: taking and encoding a frame holds the node's loop
# (about 0.2 ms for 2,000 checks), and the checks reach the rules sooner.
WORKER_DRAIN_EVERY_S = 0.02
WORKER_BATCH = 2000
WORKER_TIMEOUT_S = 60.0  # a worker that answers no batch for this long is replaced


async def _exit_code(proc: asyncio.subprocess.Process) -> int | None:
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(proc.wait(), 2.0)
    return None


class DetectionService:
    def __init__(self, config: Config, log: Any, redis: AnyRedis | None = None,
                 events: SightingPublisher | None = None, tacs: TacSource | None = None) -> None:  # fmt: skip
        self.config = config
        self.tacs = tacs
        tac_info = tacs.info if tacs is not None else None
        self.log = log
        self.events = events  # where notify findings go
        self.notified = 0
        self.recorder = Recorder()
        sites = config.peers.sites()
        self.rats = {host: site.rat for host, site in sites.items()}
        self.locations = {host: site.location for host, site in sites.items() if site.location is not None}
        self.cases = Cases(tac_info)
        # With Redis, the node keeps the cases there; the states are the engine's (the worker's).
        detector = Detector(config.detection, self.locations, tac_info)
        self.shared = (SharedDetection(redis, config.store.redis.prefix, detector, tac_info=tac_info)
                       if redis is not None else None)  # fmt: skip
        self.engine: DetectionEngine | None = None  # the rules on this loop (detection.worker: false)
        if not config.detection.worker:  # the states go through the same SharedDetection as the cases
            self.engine = DetectionEngine(config.detection, self.rats, self.locations, self.shared, tac_info)
        self.findings: dict[str, int] = {}
        self.counters = Reply(0, 0, None, 0, 0, 0, [])  # the engine's, as last reported
        self._past = [0, 0, 0, 0]  # observed, store_dropped, conflicts, unresolved of workers gone
        self.lost = 0  # checks of batches a worker took with it when it died
        self.worker: asyncio.subprocess.Process | None = None
        self._store_down = False
        self._mask = config.logging.mask_imsi

    def announce(self) -> None:
        rules = self.config.detection.rules
        live = [n for n in rules.__struct_fields__ if getattr(rules, n).enabled]
        pending = [n for n in live if getattr(rules, n).action is not Action.OBSERVE]
        where = "worker" if self.engine is None else "node loop"
        self.log.info("detection_started", rules=live, shared=self.shared is not None, runs_in=where)
        lists = [n for n in pending if getattr(rules, n).action in (Action.GREYLIST, Action.BLOCK)]
        notify = [n for n in pending if n not in lists]
        if lists and self.shared is None:
            self.log.warning("detection_actions_not_applied", rules=lists,
                             detail="greylist and block change the lists through the writer (s13eir sync), "
                                    "which needs store.backend redis: these findings are cases only")  # fmt: skip
        if (notify or lists) and self.events is None:
            self.log.warning("detection_notify_not_sent", rules=notify + lists,
                             detail="no events broker (events:): the findings are not published")  # fmt: skip

    async def run(self) -> None:
        """Drain the recorder until cancelled (supervised: a failure is restarted)."""
        if self.engine is not None:
            while True:
                await asyncio.sleep(DRAIN_EVERY_S)
                while len(self.recorder):
                    engine, now = self.engine, time.time()
                    found = await engine.process(self.recorder.take(BATCH), now)
                    await self.handle(Reply(engine.observed, engine.store_dropped, engine.store_error, 0, 0,
                                            engine.devices, found))  # fmt: skip
                    await asyncio.sleep(0)
        await self._run_worker()

    async def _run_worker(self) -> None:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "s13eir.detection_worker", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            child.close()
        self.worker = proc
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        in_flight = 0
        try:
            redis = self.config.store.redis if self.shared is not None else None
            priority = self.config.detection.worker_priority
            # The worker reads the TAC database itself: the file, or Redis's (and its new ones).
            tac_redis = self.config.store.redis if self.tacs is not None and self.tacs.redis is not None else None
            writer.write(
                frame(parameters(self.config.detection, self.rats, self.locations, redis, priority, tac_redis))
            )
            encode = msgspec.msgpack.Encoder().encode
            while True:
                await asyncio.sleep(WORKER_DRAIN_EVERY_S)
                if proc.returncode is not None:  # seen at once, not at the next batch
                    raise RuntimeError(f"the detection worker exited ({proc.returncode})")
                while len(self.recorder):
                    batch = self.recorder.take(WORKER_BATCH)
                    in_flight = len(batch)
                    writer.write(frame(encode([time.time(), batch])))
                    await writer.drain()
                    # Lock step: one batch in the worker at a time. A worker that falls
                    # behind leaves the checks in the recorder, which drops (and counts)
                    # what it cannot hold; the answers never wait.
                    body = await asyncio.wait_for(read_frame(reader), WORKER_TIMEOUT_S)
                    in_flight = 0
                    await self.handle(reply_decoder.decode(body))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            code = proc.returncode if proc.returncode is not None else await _exit_code(proc)
            raise RuntimeError(f"the detection worker exited ({code})") from exc
        finally:
            self.lost += in_flight
            # The next worker counts from 0: the node's counters go on from this one's.
            c = self.counters
            self._past = [a + b for a, b in zip(self._past, (c.observed, c.store_dropped, c.conflicts, c.unresolved),
                                                strict=True)]  # fmt: skip
            self.counters = Reply(0, 0, c.store_error, 0, 0, c.devices, [])
            writer.close()
            if proc.returncode is None:
                proc.kill()
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())

    async def handle(self, reply: Reply) -> None:
        """The engine's reply to a batch: counters, the store's state, the findings."""
        self.counters = reply
        if reply.store_error is not None and not self._store_down:
            self._store_down = True
            self.log.error("detection_store_unavailable", error=reply.store_error,
                           action="checks are counted as dropped until Redis answers; answers go on")  # fmt: skip
        elif reply.store_error is None and self._store_down:
            self._store_down = False
            self.log.info("detection_store_available", dropped=reply.store_dropped)
        found = reply.findings
        if not found:
            return
        for f in found:
            if f.action is not Action.OBSERVE:
                self._notify(f)
        if self.shared is None:
            self._found(found, [self.cases.add(f) for f in found])
            return
        self._found(found, [])
        try:
            cases = await self.shared.add_cases(found, self.config.detection.genuine_owner)
        except (RedisError, OSError) as exc:
            self.log.error("detection_cases_not_written", error=str(exc) or type(exc).__name__,
                           imeis=sorted({f.imei14 for f in found}))  # fmt: skip
            return
        for case in cases:
            self.log.info("detection_case", imei=case.imei14, rules=case.rules, status=case.status)

    def _notify(self, f: Finding) -> None:
        """An event to the fraud desk for a finding whose action is not ``observe``."""
        if self.events is None:
            return
        mask = self._mask or (self.config.events is not None and self.config.events.mask_imsi)
        event = {"event_id": uuid.uuid4().hex, "eir": self.config.node.origin_host, "t": f.t, "rule": f.rule,
                 "action": f.action.value, "imei": f.imei14, "detail": f.detail,
                 "imsis": [(mask_imsi(i) or i) if mask else i for i in f.imsis]}  # fmt: skip
        if self.events.offer_message(f"{self.config.detection.notify_topic}/{f.rule}", json.dumps(event).encode()):
            self.notified += 1

    def _found(self, found: list[Finding], cases: list[Case]) -> None:
        for i, finding in enumerate(found):
            self.findings[finding.rule] = self.findings.get(finding.rule, 0) + 1
            extra = {"rules": list(cases[i].rules)} if cases else {}
            self.log.warning("detection_finding", rule=finding.rule, imei=finding.imei14,
                             action=finding.action.value, detail=finding.detail,
                             imsis=[self._imsi(i) for i in finding.imsis], **extra)  # fmt: skip

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.redis.aclose()

    def _imsi(self, imsi: str) -> str:
        return (mask_imsi(imsi) or imsi) if self._mask else imsi

    # -- the metrics port ---------------------------------------------------------------

    async def route(self, path: bytes) -> tuple[int, str, bytes] | None:
        """``/cases`` (all, JSON) and ``/cases/<imei>``; None for any other path."""
        if path != b"/cases" and not path.startswith(b"/cases/"):
            return None
        try:
            if path == b"/cases":
                cases = self.cases.all() if self.shared is None else await self.shared.all()
                body = {"cases": [self._case(c.as_dict()) for c in cases]}
                return 200, "application/json", json.dumps(body).encode()
            imei = path[7:].decode("ascii", "replace")[:14]
            case = self.cases.get(imei) if self.shared is None else await self.shared.get(imei)
        except (RedisError, OSError):
            return 503, "application/json", b'{"error": "the detection store (Redis) does not answer"}'
        if case is None:
            return 404, "application/json", b'{"error": "no case for this IMEI"}'
        return 200, "application/json", json.dumps(self._case(case.as_dict())).encode()

    def _case(self, case: dict[str, Any]) -> dict[str, Any]:
        return masked(case) if self._mask else case

    def metrics(self) -> Iterable[Metric]:
        recorded = CounterMetricFamily("s13eir_detection_checks", "Answered checks left for detection")
        recorded.add_metric([], self.recorder.recorded)
        yield recorded
        seen = CounterMetricFamily("s13eir_detection_sightings",
                                   "Checks fed to the rules (not a phone's repeat within a minute)")  # fmt: skip
        past_seen, past_store, past_conflicts, past_unresolved = self._past
        seen.add_metric([], past_seen + self.counters.observed)
        yield seen
        dropped = CounterMetricFamily("s13eir_detection_dropped", "Checks dropped before detection",
                                      labels=["reason"])  # fmt: skip
        dropped.add_metric(["queue"], self.recorder.dropped)  # the recorder was full
        dropped.add_metric(["store"], past_store + self.counters.store_dropped)  # Redis could not be reached
        dropped.add_metric(["worker"], self.lost)  # in a worker's hands when it died
        if self.shared is not None:
            dropped.add_metric(["conflict"], past_unresolved + self.counters.unresolved)  # contended past MAX_ROUNDS
        yield dropped
        notified = CounterMetricFamily("s13eir_detection_notified", "Findings published to the fraud desk (notify)")
        notified.add_metric([], self.notified)
        yield notified
        found = CounterMetricFamily("s13eir_detection_findings", "Findings of the detection rules", labels=["rule"])
        for rule, n in sorted(self.findings.items()):
            found.add_metric([rule], n)
        yield found
        if self.shared is None:
            cases = GaugeMetricFamily("s13eir_detection_cases", "IMEIs with a detection case")
            cases.add_metric([], len(self.cases))
            yield cases
            devices = GaugeMetricFamily("s13eir_detection_devices", "IMEIs whose recent checks detection keeps")
            devices.add_metric([], self.counters.devices)
            yield devices
        else:  # the cluster's counts live in Redis; scraping does not ask it
            conflicts = CounterMetricFamily("s13eir_detection_conflicts",
                                            "Device states written again after another node changed them")  # fmt: skip
            conflicts.add_metric([], past_conflicts + self.counters.conflicts)
            yield conflicts
