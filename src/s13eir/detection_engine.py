"""The rules over a node's raw checks: a drained batch in, findings out. Run in the
detection worker process (:mod:`s13eir.detection_worker`, the default) or on the node's
loop (``detection.worker: false``); either way the same code.

It decodes each check once (peers and software versions are few and decoded once each),
skips a repeat of a phone's last check within ``REPEAT_S`` before any decoding, and feeds
the detection core: the embedded detector, or the cluster's state in Redis
(:class:`SharedDetection`). Redis away: the batch is counted as dropped, and the state
says so until a batch goes through again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .detection.detector import REPEAT_S, Detector, Finding
from .detection.observation import Location, Observation, Rat, TacInfo
from .detection.recorder import Raw
from .detection.rules import DetectionConfig
from .detection_shared import RedisError, SharedDetection

EXPIRE_EVERY_S = 600.0
_MAX_DECODED = 10_000  # peers and software versions remembered decoded
_UNSEEN: Any = object()


def _text(value: bytes | str | None) -> str | None:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class DetectionEngine:
    def __init__(
        self,
        config: DetectionConfig,
        rats: dict[str, Rat],
        locations: dict[str, Location],
        shared: SharedDetection | None = None,
        tac_info: Callable[[str], TacInfo | None] | None = None,
    ) -> None:
        self.rats = rats
        self.detector = shared.detector if shared is not None else Detector(config, locations, tac_info)
        self.shared = shared
        self.observed = 0  # checks fed to the rules
        self.store_dropped = 0  # checks not applied because Redis could not be reached
        self.store_error: str | None = None  # while Redis does not answer: why
        self._next_expiry = 0.0
        self._fed: dict[str, tuple[Raw, float]] = {}  # IMEI -> its last check fed to the core, and when
        self._peers: dict[tuple[bytes | str, str], tuple[str, Rat]] = {}  # (Origin-Host, interface) -> (peer, rat)
        self._svs: dict[bytes | str, str | None] = {}

    @property
    def devices(self) -> int:
        """IMEIs the embedded detector keeps (0 when the state is in Redis)."""
        return len(self.detector) if self.shared is None else 0

    async def process(self, batch: list[Raw], now: float) -> list[Finding]:
        observations = self.observations(batch, now)
        if not observations:
            return []
        if self.shared is None:
            return [f for o in observations for f in self.detector.observe(o, now)]
        try:
            found = await self.shared.observe(observations, now)
        except (RedisError, OSError) as exc:
            self.store_dropped += len(observations)
            self.store_error = str(exc) or type(exc).__name__
            return []
        self.store_error = None
        return found

    def observations(self, batch: list[Raw], now: float) -> list[Observation]:
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
