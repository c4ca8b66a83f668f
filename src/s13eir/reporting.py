"""What a node tells about itself: the ``verdict`` log line of every S13 and N5g-eir
answer that is logged, the peers' events (``peer_open``, ``protocol_error``, ...), the
sighting events, and the metric families of the store and the sightings publisher. The
composition root (``node.py``) builds one and passes its callbacks to the S13
application, the Diameter connections and the N5g-eir server; a reload of the logging
section calls ``configure``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from structlog.typing import FilteringBoundLogger

from .config import Config
from .decision.masking import mask_entry, mask_imsi
from .decision.model import EquipmentStatus
from .detection.recorder import Recorder
from .diameter.capx import PeerInfo
from .diameter.constants import TOO_BUSY
from .diameter.events import Event, PeerClosed, PeerOpened, PeerRejected, ProtocolError, WatchdogChanged
from .lists.snapshot import ListSnapshot
from .observability.metrics import Metrics
from .s13.application import Outcome
from .sbi.n5g_eir import SbiOutcome
from .sbi.report import outcome_logger
from .sightings.sighting import Sighting, verdict_name

if TYPE_CHECKING:  # the Redis client and MQTT cost most of a node's start-up: imported when used
    from .lists.redis_store import RedisLists
    from .sightings.publisher import SightingPublisher
    from .tac_store import TacSource
    from .transport.tcp import DiameterProtocol

__all__ = ["NO_STATUS", "Reporting"]

NO_STATUS = -1


class Reporting:
    def __init__(self, config: Config, log: FilteringBoundLogger, metrics: Metrics,
                 sightings: SightingPublisher | None, redis_lists: RedisLists | None,
                 snapshot: Callable[[], ListSnapshot]) -> None:  # fmt: skip
        self.log = log
        self.metrics = metrics
        self.sightings = sightings
        self.tacs: TacSource | None = None  # set by the node when it has a TAC database
        self.redis_lists = redis_lists
        self.app_snapshot = snapshot  # the embedded lists in force (their Bloom counters)
        self.recorder: Recorder | None = None  # detection's queue, when detection is on
        self._log_sbi: Callable[[SbiOutcome], None] = lambda outcome: None
        self.configure(config)
        metrics.set_bloom_source(self._bloom_stats)
        if redis_lists is not None:
            metrics.add_source(self._store_metrics)
        if sightings is not None:
            metrics.add_source(self._sighting_metrics)

    def configure(self, config: Config) -> None:
        """The logging section, at start and on each reload of it."""
        self._log_white = config.logging.log_whitelisted
        # Verdict lines are at info: below that level, do not even build their fields.
        self._log_verdicts = self.log.is_enabled_for(logging.INFO)
        # One setting for every identifier in every log line and sighting event.
        self._mask = config.logging.mask_imsi or (config.events is not None and config.events.mask_imsi)
        if self.sightings is not None:
            self.sightings.mask = self._mask
        self._log_sbi = outcome_logger(self.log, log_whitelisted=self._log_white, mask=self._mask)

    def on_sbi_outcome(self, outcome: SbiOutcome) -> None:
        if self.recorder is not None and outcome.imei14 is not None:
            # The AMF as its User-Agent names it (TS 29.500: "AMF-<instance id or FQDN>"),
            # else its address: a peers.list entry of that name gives it a location.
            amf = outcome.consumer or outcome.client.rsplit(":", 1)[0]
            self.recorder.record(outcome.imei14, outcome.imsi, None, outcome.pei, amf, "n5g-eir")
        self._log_sbi(outcome)
        self._sbi_sighting(outcome)

    def on_event(self, event: Event, conn: DiameterProtocol) -> None:
        if isinstance(event, PeerOpened):
            p = event.peer
            self.log.info("peer_open", peer=p.origin_host, realm=p.origin_realm, remote=conn.remote,
                     origin_state_id=p.origin_state_id, replaced_old=event.displaced is not None)  # fmt: skip
        elif isinstance(event, PeerRejected):
            if event.result_code:
                self.metrics.count_protocol_error(event.result_code)
            self.log.warning("peer_rejected", result_code=event.result_code, reason=event.reason,
                        peer=event.origin_host or None, remote=conn.remote)  # fmt: skip
        elif isinstance(event, PeerClosed):
            core = conn.core
            peer = core.peer.origin_host if core is not None and core.peer is not None else None
            self.log.info("peer_closed", peer=peer, remote=conn.remote, reason=event.reason)
        elif isinstance(event, ProtocolError):
            self.metrics.count_protocol_error(event.result_code)
            if event.result_code == TOO_BUSY:
                self.metrics.requests_rejected_busy += 1
            self.log.info("protocol_error", result_code=event.result_code, command=event.command_code,
                     detail=event.detail, remote=conn.remote)  # fmt: skip
        elif isinstance(event, WatchdogChanged):
            self.log.warning("watchdog", state=event.state, remote=conn.remote)

    def on_outcome(self, outcome: Outcome, peer: PeerInfo) -> None:
        verdict = outcome.verdict
        status = verdict.status if verdict is not None else None
        self.metrics.count_answer(outcome.result_code, NO_STATUS if status is None else int(status))
        if self.sightings is not None:
            self.sightings.offer_outcome(outcome)  # never blocks: a bounded queue
        if (status is EquipmentStatus.WHITELISTED and not self._log_white) or not self._log_verdicts:
            return
        q = outcome.query
        fields: dict[str, Any] = {
            "result_code": outcome.result_code,
            "status": status.name if status is not None else None,
            "peer": peer.origin_host,
            "peer_realm": peer.origin_realm,
        }
        if q is not None:
            fields.update(imei=q.imei, imsi=mask_imsi(q.imsi) if self._mask else q.imsi, sv=q.software_version,
                          session_id=q.session_id)  # fmt: skip
        if verdict is not None:
            r = verdict.reason
            entry = mask_entry(r.rule.value, r.entry) if self._mask else r.entry
            fields.update(rule=r.rule.value, list=r.list, source=r.source, entry=entry, reason=r.detail)
        if q is not None and self.tacs is not None:
            device = self.tacs.describe(q.imei[:8])  # the TAC database's model and type
            if device is not None:
                fields.update(model=device["model"], device_type=device["device_type"])
        if outcome.detail:
            fields["detail"] = outcome.detail
        self.log.info("verdict", **fields)

    def _sbi_sighting(self, outcome: SbiOutcome) -> None:
        verdict = outcome.verdict
        if self.sightings is None or verdict is None or verdict.status is EquipmentStatus.WHITELISTED:
            return
        self.sightings.offer(
            Sighting(
                imei=outcome.pei or "", imei14=outcome.imei14, imsi=outcome.imsi, software_version=None,
                origin_host=outcome.client, origin_realm="", session_id="", interface="n5g-eir",
                time=time.time(), verdict=verdict_name(verdict), result_code=outcome.http_status,
                reason=verdict.reason,
            )
        )  # fmt: skip

    def _bloom_stats(self) -> tuple[int, int, int]:
        if self.redis_lists is not None:
            st = self.redis_lists.stats
            return st.bloom_positives, st.bloom_negatives, st.remote_empty
        s = self.app_snapshot().stats
        return s.positives, s.negatives, s.false_positives

    def _sighting_metrics(self) -> list[Metric]:
        p = self.sightings
        assert p is not None
        return [
            CounterMetricFamily("s13eir_sightings_published", "Sighting events delivered.", value=p.published),
            CounterMetricFamily("s13eir_sightings_dropped", "Sighting events dropped (queue full).", value=p.dropped),
            GaugeMetricFamily("s13eir_sightings_queued", "Sighting events waiting for the broker.", value=p.queued),
            GaugeMetricFamily(
                "s13eir_events_broker_up", "1 while the events broker is connected.", value=1 if p.connected else 0
            ),
        ]

    def _store_metrics(self) -> list[Metric]:
        store = self.redis_lists
        assert store is not None
        st = store.stats
        bits = GaugeMetricFamily("s13eir_bloom_size_bits", "Bloom filter size, by list.", labels=["list"])
        items = GaugeMetricFamily("s13eir_bloom_items", "Approximate IMEIs in the Bloom filter.", labels=["list"])
        for name, (size, approx) in sorted(store.bloom_info().items()):
            bits.add_metric([name], size)
            items.add_metric([name], approx)
        fp = st.remote_empty / st.bloom_positives if st.bloom_positives else 0.0
        out: list[Metric] = [
            bits,
            items,
            GaugeMetricFamily("s13eir_bloom_observed_fp_rate", "Bloom positives Redis did not confirm.", value=fp),
            CounterMetricFamily("s13eir_redis_lookups", "IMEIs confirmed in Redis.", value=st.remote_lookups),
            CounterMetricFamily("s13eir_redis_failures", "Lookups Redis could not answer.", value=st.remote_failures),
            CounterMetricFamily(
                "s13eir_redis_cache_hits", "Bloom positives answered from the cache.", value=st.cache_hits
            ),
            CounterMetricFamily("s13eir_changes_applied", "Change-stream records applied.", value=st.changes_applied),
            CounterMetricFamily(
                "s13eir_change_follower_failures",
                "Unexpected errors of the change-stream follower (each one reloads the lists from Redis).",
                value=st.follower_failures,
            ),
            GaugeMetricFamily("s13eir_change_seq", "Last change-stream sequence applied.", value=store.seq),
            GaugeMetricFamily("s13eir_redis_up", "1 while Redis answers.", value=1 if store.healthy else 0),
            CounterMetricFamily(
                "s13eir_store_regressions",
                "Times the store was found empty, replaced or gone back (the node kept its lists).",
                value=st.regressions,
            ),
            CounterMetricFamily(
                "s13eir_confirm_failures",
                "Unexpected errors confirming Bloom positives (the batch was answered per policy).",
                value=st.confirm_failures,
            ),
        ]
        state = GaugeMetricFamily(
            "s13eir_store_state",
            "1 for the list store's state: ok, unavailable (Redis away: degraded, answering per "
            "policy.store_unavailable), regressed (the store went back; lists kept), empty (none loaded).",
            labels=["state"],
        )
        current = store.state()
        for name in ("ok", "unavailable", "regressed", "empty"):
            state.add_metric([name], 1 if name == current else 0)
        out.append(state)
        return out
