"""Detection in a running node: the checks the answer path left in the recorder are
drained every 100 ms into the detection core, off the answer path, and its findings kept
as cases, counted per rule and served on the metrics port (``/cases``, ``/cases/<imei>``).

With the embedded store the state and the cases are the node's own. With Redis
(``store.backend: redis``) they are the cluster's (:mod:`s13eir.detection_shared`): every
node's checks of one IMEI meet in one state, a finding is made once, and any node serves
every case. Actions other than ``observe`` are not applied live yet (a finding becomes a
case and a metric, and ``notify``/``greylist``/``block`` are logged once at start as not
applied).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .backends.redis_client import AnyRedis
from .config import Config
from .decision.masking import mask_imsi
from .detection.cases import Case, Cases, masked
from .detection.detector import REPEAT_S, Detector, Finding
from .detection.observation import Observation, Rat
from .detection.recorder import Raw, Recorder
from .detection.rules import Action
from .detection_shared import RedisError, SharedDetection

DRAIN_EVERY_S = 0.1
BATCH = 5000  # observations per turn of the loop, between yields
EXPIRE_EVERY_S = 600.0
_MAX_DECODED = 10_000  # peers and software versions remembered decoded
_UNSEEN: Any = object()


def _text(value: bytes | str | None) -> str | None:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class DetectionService:
    def __init__(self, config: Config, log: Any, redis: AnyRedis | None = None) -> None:
        self.config = config
        self.log = log
        self.recorder = Recorder()
        sites = config.peers.sites()
        self.rats = {host: site.rat for host, site in sites.items()}
        locations = {host: site.location for host, site in sites.items() if site.location is not None}
        self.detector = Detector(config.detection, locations)
        self.cases = Cases()
        self.shared = SharedDetection(redis, config.store.redis.prefix, self.detector) if redis is not None else None
        self.findings: dict[str, int] = {}
        self.observed = 0
        self.store_dropped = 0  # checks not applied because Redis could not be reached
        self._store_down = False
        self._next_expiry = 0.0
        self._fed: dict[str, tuple[Raw, float]] = {}  # IMEI -> its last check fed to the core, and when
        self._peers: dict[tuple[bytes | str, str], tuple[str, Rat]] = {}  # (Origin-Host, interface) -> (peer, rat)
        self._svs: dict[bytes | str, str | None] = {}
        self._mask = config.logging.mask_imsi

    def announce(self) -> None:
        rules = self.config.detection.rules
        live = [n for n in rules.__struct_fields__ if getattr(rules, n).enabled]
        pending = [n for n in live if getattr(rules, n).action is not Action.OBSERVE]
        self.log.info("detection_started", rules=live)
        if pending:
            self.log.warning("detection_actions_not_applied", rules=pending,
                             detail="findings become cases and metrics; no list change is made live yet")  # fmt: skip

    async def run(self) -> None:
        """Drain the recorder until cancelled (supervised: a failure is restarted)."""
        while True:
            await asyncio.sleep(DRAIN_EVERY_S)
            while len(self.recorder):
                await self.process(self.recorder.take(BATCH), time.time())
                await asyncio.sleep(0)

    async def process(self, batch: list[Raw], now: float) -> None:
        observations = self._observations(batch, now)
        if not observations:
            return
        if self.shared is None:
            found = [f for o in observations for f in self.detector.observe(o, now)]
            self._found(found, [self.cases.add(f) for f in found])
            return
        try:
            found = await self.shared.observe(observations, now)
            self._found(found, [])
            cases = await self.shared.add_cases(found) if found else []
        except (RedisError, OSError) as exc:
            self.store_dropped += len(observations)
            if not self._store_down:
                self._store_down = True
                self.log.error("detection_store_unavailable", error=str(exc) or type(exc).__name__,
                               action="checks are counted as dropped until Redis answers; answers go on")  # fmt: skip
            return
        if self._store_down:
            self._store_down = False
            self.log.info("detection_store_available", dropped=self.store_dropped)
        for case in cases:
            self.log.info("detection_case", imei=case.imei14, rules=case.rules, status=case.status)

    def _observations(self, batch: list[Raw], now: float) -> list[Observation]:
        if now >= self._next_expiry:
            if self.shared is None:
                self.detector.expire(now)  # shared states expire in Redis (their TTL)
            self._next_expiry = now + EXPIRE_EVERY_S
            self._fed.clear()
        fed, peers, svs = self._fed, self._peers, self._svs
        out = []
        for raw in batch:
            imei14, imsi, sv, imei, host, interface = raw
            # The core skips a repeat of a phone's last check within REPEAT_S; skipping it
            # here, before any decoding, is most of the cost saved. One check a minute per
            # unchanged phone still reaches the core, which keeps its state alive.
            last = fed.get(imei14)
            if last is not None and last[0] == raw and now - last[1] < REPEAT_S:
                continue
            fed[imei14] = (raw, now)
            # Peers and software versions are few: decoded once each, not per check.
            site = peers.get((host, interface))
            if site is None:
                site = self._site(host, interface)
            text_sv = None
            if sv is not None:
                text_sv = svs.get(sv, _UNSEEN)
                if text_sv is _UNSEEN:
                    text_sv = _text(sv)
                    if len(svs) < _MAX_DECODED:
                        svs[sv] = text_sv
            sent = imei if imei is not None and len(imei) == 15 else None
            out.append(Observation(now, imei14, imsi, site[0], site[1], text_sv, _text(sent)))
        self.observed += len(out)
        return out

    def _site(self, host: bytes | str, interface: str) -> tuple[str, Rat]:
        peer = (_text(host) or "").lower()
        site = (peer, Rat.NR if interface == "n5g-eir" else self.rats.get(peer, Rat.EUTRAN))
        if len(self._peers) < _MAX_DECODED:
            self._peers[(host, interface)] = site
        return site

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
        seen = CounterMetricFamily("s13eir_detection_sightings", "Checks fed to the detection rules")
        seen.add_metric([], self.observed)
        yield seen
        dropped = CounterMetricFamily("s13eir_detection_dropped", "Checks dropped before detection",
                                      labels=["reason"])  # fmt: skip
        dropped.add_metric(["queue"], self.recorder.dropped)  # the recorder was full
        dropped.add_metric(["store"], self.store_dropped)  # Redis could not be reached
        if self.shared is not None:
            dropped.add_metric(["conflict"], self.shared.unresolved)  # still contended after MAX_ROUNDS
        yield dropped
        found = CounterMetricFamily("s13eir_detection_findings", "Findings of the detection rules", labels=["rule"])
        for rule, n in sorted(self.findings.items()):
            found.add_metric([rule], n)
        yield found
        if self.shared is None:
            cases = GaugeMetricFamily("s13eir_detection_cases", "IMEIs with a detection case")
            cases.add_metric([], len(self.cases))
            yield cases
            devices = GaugeMetricFamily("s13eir_detection_devices", "IMEIs whose recent checks detection keeps")
            devices.add_metric([], len(self.detector))
            yield devices
        else:  # the cluster's counts live in Redis; scraping does not ask it
            conflicts = CounterMetricFamily("s13eir_detection_conflicts",
                                            "Device states written again after another node changed them")  # fmt: skip
            conflicts.add_metric([], self.shared.conflicts)
            yield conflicts
