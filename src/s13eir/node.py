"""The composition root: builds an EIR node from its configuration and owns
every listener, task and signal handler. Policy lives in the modules it wires.

Start-up order (:meth:`Node.start`): the metrics/health server first, then the
lists (:mod:`s13eir.node_lists`), then the S13 (Diameter) and N5g-eir listeners. Loading
ten million IMEIs can take a minute; meanwhile ``/healthz`` answers 200, ``/readyz``
answers 503 ``loading: ...``, ``/metrics`` works, and the Diameter and N5g-eir ports are
not open yet, so a peer is refused rather than left waiting. A load that fails closes the
health server again and the error ends the process. A reload (SIGHUP) applies what
:func:`s13eir.config_reload.plan_reload` says can change live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .config import Config, ConfigError
from .config_loading import load_config
from .config_reload import plan_reload
from .decision.masking import mask_imsi, mask_msisdn
from .diameter import dictionary as dictionary_mod
from .diameter.capx import LocalIdentity, admits
from .diameter.constants import (
    DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU,
    DISCONNECT_REBOOTING,
    SUCCESS,
)
from .diameter.peer import PeerRegistry, PeerState
from .lists.snapshot import ListSnapshot
from .mode_state import grace_payload, moded_check, modes_active
from .node_lists import NodeLists, StartError
from .observability.http import start_http
from .observability.logs import get_logger, set_level
from .observability.loop_lag import LoopLagProbe
from .observability.metrics import Metrics
from .overload import OverloadControl
from .reporting import Reporting
from .s13.application import MeIdentityCheck
from .s13.service import fast_paths, peer_policy, peer_settings, uses_fast_path
from .sbi.n5g_eir import Check, lists_check
from .supervision import Supervisor
from .transport.admission import AdmissionMonitor
from .transport.sctp import listening_socket
from .transport.tcp import DiameterProtocol

TAC_REFRESH_S = 30.0  # how often Redis is asked whether a new TAC database was imported

if TYPE_CHECKING:  # each costs a few hundred milliseconds of start-up: imported when configured
    from .decision.grace import GraceEvent
    from .detection_service import DetectionService
    from .lists.redis_store import RedisLists
    from .mode_state import ModeState
    from .sbi.server import SbiServer
    from .sightings.publisher import SightingPublisher
    from .tac_store import TacSource
    from .webhook import Webhook


def _local_addresses(config: Config) -> tuple[str, ...]:
    addrs = config.host_ip_addresses
    if addrs:
        return addrs
    # Wildcard listeners: advertise what the host name resolves to, else loopback.
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)
        found = tuple(dict.fromkeys(str(i[4][0]) for i in infos))
    except OSError:
        found = ()
    return found or ("127.0.0.1",)


class Node:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        reuse_port: bool = False,
        shared_lists: str | None = None,
        worker_index: int | None = None,
    ) -> None:
        self.config = config
        self.shared_lists = shared_lists  # a snapshot file mapped from the supervisor (serve --workers)
        self.worker_index = worker_index
        self.reuse_port = reuse_port
        self.config_path = config_path
        self.log = get_logger("s13eir.node")  # after configure_logging(), which the CLI calls first
        self.metrics = Metrics()
        self._loop_lag: LoopLagProbe | None = None
        self.dictionary = dictionary_mod.load(config.diameter.dictionaries)
        self.local = LocalIdentity(
            origin_host=config.node.origin_host,
            origin_realm=config.node.origin_realm,
            host_ip_addresses=_local_addresses(config),
            vendor_id=config.node.vendor_id,
            product_name=config.node.product_name,
            firmware_revision=config.node.firmware_revision,
            # RFC 6733 §8.16: must grow on every restart; seconds since the epoch do.
            origin_state_id=int(time.time()) & 0xFFFFFFFF,
        )
        self.redis_lists: RedisLists | None = None
        # Every background task of the node (tests/test_supervision.py: no bare create_task).
        self.supervisor = Supervisor()
        self.metrics.add_source(self.supervisor.metrics)
        lists: ListSnapshot | RedisLists
        if config.store.backend == "redis":
            from .backends.redis_client import connect
            from .lists.redis_store import RedisLists

            r = config.store.redis
            self.redis_lists = lists = RedisLists(
                # The change-stream follower blocks in XREAD for up to a second: the socket
                # timeout must outlast that. Lookups are bounded by store.redis.timeout_ms.
                connect(r, timeout_s=5.0),
                r.prefix,
                timeout_s=r.timeout_ms / 1000,
                cache_entries=r.cache_entries,
                rebuild_after_removals=r.rebuild_after_removals,
                bloom_fp_rate=config.store.bloom_fp_rate,
                supervisor=self.supervisor,
            )
        else:
            lists = ListSnapshot.empty()  # replaced by start() once the files are loaded
        self.sightings: SightingPublisher | None = None
        if config.events is not None:
            from .sightings.publisher import SightingPublisher

            client_id = config.events.client_id or f"s13eir-{config.node.origin_host}"
            if worker_index is not None:
                client_id += f"-w{worker_index}"  # the broker drops the older of two clients with one id
            mask = config.logging.mask_imsi or config.events.mask_imsi
            self.sightings = SightingPublisher(config.events, config.node.origin_host, client_id=client_id, mask=mask)
        self.reporting = Reporting(config, self.log, self.metrics, self.sightings, self.redis_lists,
                                   lambda: self.app_snapshot)  # fmt: skip
        self.app = MeIdentityCheck(self.local, lists, config.policy.decision_policy(), self.reporting.on_outcome,
                                   remote=self.redis_lists)  # fmt: skip
        self.metrics.set_fast_whitelisted_source(lambda: self.app.whitelisted_fast)
        # The operating modes (Q.Sup73), when one is on: S13 and N5g-eir ask the same state.
        self.modes: ModeState | None = None
        if modes_active(config.modes):
            from .mode_state import ModeState

            self.modes = self.app.modes = ModeState(config.modes, self._grace_event)
        self.webhook: Webhook | None = None
        if config.modes.webhook is not None:
            from .webhook import Webhook

            self.webhook = Webhook(config.modes.webhook, self.log)
            self.metrics.add_source(self.webhook.metrics)
        # The GSMA TAC database: the device's model and type in verdict lines, sighting
        # events and cases, and the TAC rules (tac_store.py).
        self.tacs: TacSource | None = None
        if config.detection.tac_database is not None or config.store.backend == "redis":
            from .tac_store import TacSource

            tac_redis = None
            if config.detection.tac_database is None:
                from .backends.redis_client import connect

                tac_redis = connect(config.store.redis, timeout_s=10.0)
            self.tacs = TacSource(config.detection.tac_database, tac_redis, config.store.redis.prefix)
            self.reporting.tacs = self.tacs
            if self.sightings is not None:
                self.sightings.describe = self.tacs.describe
        self.detection: DetectionService | None = None
        if config.detection.enabled:
            from .detection_service import DetectionService

            detection_redis = None
            if config.store.backend == "redis":
                from .backends.redis_client import connect

                # Its own client: a slow detection batch never queues behind list lookups.
                detection_redis = connect(config.store.redis, timeout_s=2.0)
            self.detection = DetectionService(config, get_logger("s13eir.detection"), detection_redis, self.sightings,
                                              self.tacs)  # fmt: skip
            self.app.recorder = self.reporting.recorder = self.detection.recorder
            self.metrics.add_source(self.detection.metrics)
        # Until start() has loaded them (NodeLists.progress, on /readyz) the embedded store
        # answers from an empty snapshot, which no listener can reach.
        self.lists = NodeLists(config, shared=shared_lists, redis=self.redis_lists, metrics=self.metrics, log=self.log,
                               install=self._install_lists, current=lambda: self.app_snapshot)  # fmt: skip
        self.registry = PeerRegistry()
        o = config.diameter.overload
        # The sequence number of DOIC reports must never go back: milliseconds since the epoch.
        self.overload = OverloadControl(o.settings(), int(time.time() * 1000))
        self.settings = peer_settings(config, self.local, self.dictionary, self.app, self.registry, self.overload)
        self.connections: set[DiameterProtocol] = set()
        rl = self.redis_lists
        waiting = (lambda: rl.oldest_wait(asyncio.get_running_loop().time())) if rl is not None else None
        self.admission = AdmissionMonitor(self.overload, self.connections, waiting)
        self.metrics.add_source(self.admission.metrics)
        self.servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, str, int]] = []  # (transport, address, port) actually listening
        self._stopping = False
        self._refused_logged = 0.0
        self._stopped = asyncio.Event()
        self.metrics.set_peers_source(lambda: len(self.registry))
        self.metrics.set_lists_source(lambda: self.app.lists.counts())  # type: ignore[attr-defined]
        self.sbi: SbiServer | None = None

    def _sbi_check(self) -> Check:
        """N5g-eir's verdicts from the lists and the policy of S13 (read per request),
        judged under the operating modes as S13's are."""
        if self.redis_lists is not None:
            from .sbi.store_check import store_check

            check = store_check(lambda: self.app.lists, lambda: self.app.policy, self.redis_lists)
        else:
            check = lists_check(lambda: self.app_snapshot, lambda: self.app.policy)
        return moded_check(check, self.modes) if self.modes is not None else check

    def _grace_event(self, event: GraceEvent) -> None:
        """A grace transition: logged, and published for the subscriber's notification."""
        mask = self.config.logging.mask_imsi
        imsi = (mask_imsi(event.imsi) or event.imsi) if mask else event.imsi
        msisdn = self.modes.msisdns.get(event.imsi) if self.modes is not None else None
        if msisdn is not None and mask:
            msisdn = mask_msisdn(msisdn)
        self.log.info("grace_event", kind=event.kind, imei=event.imei14, imsi=imsi, msisdn=msisdn,
                      reason=event.reason.value, stage=event.stage.value, deadline=event.deadline,
                      by=event.by)  # fmt: skip
        payload = grace_payload(event, imsi, msisdn)
        if self.sightings is not None:
            self.sightings.offer_message(f"{self.config.modes.events_topic}/{event.kind}", payload)
        if self.webhook is not None:
            self.webhook.offer(payload)

    def _install_lists(self, snapshot: ListSnapshot) -> None:
        self.app.lists = snapshot

    @property
    def app_snapshot(self) -> ListSnapshot:
        lists = self.app.lists
        assert isinstance(lists, ListSnapshot)
        return lists

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the metrics/health server, load the lists, then open the listeners.

        The order lets an orchestrator see the process alive (``/healthz``) while a
        large list loads, and keeps peers off until there is something to answer
        with (see the module docstring). If any step fails, what was opened is
        closed and the error propagates: the caller exits non-zero.
        """
        try:
            await self._start_http()
            await self._load_tacs()
            await self.lists.load(health=self._http_url())
            await self._start_serving()
        except BaseException:
            await self.stop()
            raise

    async def _load_tacs(self) -> None:
        tacs = self.tacs
        if tacs is None:
            return
        if tacs.redis is not None:
            # Read in the background: a slow Redis must not hold the lists' load up.
            self.supervisor.start("tac-database", self._follow_tacs, critical=False)
            return
        from .detection.tac_db import TacFileError

        try:
            await tacs.refresh()
        except (TacFileError, OSError) as exc:  # a file named in the configuration: the start fails
            raise StartError(f"detection.tac_database: {exc}") from exc
        if tacs.db is not None:
            self.log.info("tac_database_loaded", tacs=len(tacs.db), source=tacs.db.source)

    async def _follow_tacs(self) -> None:
        """Redis's TAC database, read at start and again when ``s13eir tacs import`` makes
        a new generation current (looked at every TAC_REFRESH_S)."""
        from redis.exceptions import RedisError

        tacs = self.tacs
        assert tacs is not None
        while True:
            try:
                changed = await tacs.refresh()
            except (RedisError, OSError):
                changed = False  # Redis away: the lists' follower reports it; the TACs in use stay
            if changed and tacs.db is not None:
                self.log.info("tac_database_loaded", tacs=len(tacs.db), source=tacs.db.source)
            await asyncio.sleep(TAC_REFRESH_S)

    def _start_loop_lag(self) -> None:
        # The probe feeds admission control too, so it runs when either wants it.
        interval_ms = self.config.metrics.loop_lag_interval_ms if self.config.metrics.enabled else 0
        on_sample = self.admission.on_lag if self.config.diameter.overload.enabled else None
        if on_sample is not None and not interval_ms:
            interval_ms = 100
        if interval_ms:
            self._loop_lag = LoopLagProbe(self.metrics.loop_lag, interval_ms / 1000, on_sample=on_sample)
            self._loop_lag.start()

    async def _start_http(self) -> None:
        self._start_loop_lag()
        if not self.config.metrics.enabled:
            return
        routes = self.detection.route if self.detection is not None else None
        http = await start_http(self.config.metrics.address, self.config.metrics.port, self.metrics, self.ready, routes)
        self.servers.append(http)
        addr = http.sockets[0].getsockname()
        self.bound.append(("http", str(addr[0]), int(addr[1])))

    def _http_url(self) -> str | None:
        return next((f"http://{a}:{p}" for t, a, p in self.bound if t == "http"), None)

    async def _start_serving(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sightings is not None:
            self.sightings.start(self.supervisor)
        if self.detection is not None:
            self.detection.announce()
            self.supervisor.start("detection", self.detection.run)
        if self.webhook is not None:
            self.supervisor.start("grace-webhook", self.webhook.run, critical=False)
        if self.config.sbi is not None:
            from .sbi.server import start_sbi

            sbi_cfg = self.config.sbi
            if self.worker_index and sbi_cfg.nrf.url:
                # One NF instance towards the NRF: worker 0 registers it for all workers.
                sbi_cfg = msgspec.structs.replace(sbi_cfg, nrf=msgspec.structs.replace(sbi_cfg.nrf, url=None))
            self.sbi = await start_sbi(
                sbi_cfg,
                self._sbi_check(),
                self.reporting.on_sbi_outcome,
                self.metrics,
                policy=self.config.policy,
                node_name=self.config.node.origin_host,
                reuse_port=self.reuse_port,
                supervisor=self.supervisor,
                overload=self.overload,
            )
            self.bound.append(("sbi", *self.sbi.bound))
        for listen in self.config.listen:
            if listen.transport == "tcp":
                server = await loop.create_server(
                    self._protocol, listen.address, listen.port, reuse_address=True, reuse_port=self.reuse_port or None
                )
            else:
                sock = listening_socket(listen.address, listen.port, reuse_port=self.reuse_port)
                server = await loop.create_server(self._protocol, sock=sock)
            self.servers.append(server)
            for s in server.sockets:
                addr = s.getsockname()
                self.bound.append((listen.transport, str(addr[0]), int(addr[1])))
        self.log.info(
            "started",
            origin_host=self.local.origin_host,
            origin_realm=self.local.origin_realm,
            listening=[f"{t}://{a}:{p}" for t, a, p in self.bound],
        )

    def _protocol(self) -> DiameterProtocol:
        self.metrics.connections_total += 1
        resolve = self.app.resolve if self.redis_lists is not None else None
        return DiameterProtocol(self.settings, self.reporting.on_event, self.connections, self.metrics.observe_latency,
                                resolve,
                                max_pending=self.config.diameter.max_pending_connections,
                                on_refused=self._refused_pending)  # fmt: skip

    def _refused_pending(self) -> None:
        self.metrics.connections_refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 1.0:  # a flood logs once a second, the count says how many
            self._refused_logged = now
            self.log.warning("connection_refused", reason="too many connections awaiting CER",
                             limit=self.config.diameter.max_pending_connections,
                             refused_total=self.metrics.connections_refused)  # fmt: skip

    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for ``/readyz``: not while loading the lists (``loading: ...``),
        before the S13 listeners are bound, while shutting down, or, with Redis, while
        Redis is away."""
        if self._stopping:
            return False, "shutting down"
        loading = self.lists.progress
        if loading is not None:
            return False, f"loading: {loading.describe()}"
        if not any(t in ("tcp", "sctp") for t, _, _ in self.bound):
            return False, "not listening yet"
        down = self.supervisor.describe_down()
        if down:
            return False, down
        if self.redis_lists is not None:
            return self.redis_lists.ready()
        return True, "ready"

    def watch_parent(self, fd: int) -> None:
        """Stop, as on SIGTERM, when the supervisor is gone (end-of-file on ``fd``), and
        remove the shared snapshot it can no longer remove."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return
            loop.remove_reader(fd)
            self.log.error("supervisor_gone", action="stopping; removing the shared lists")
            if self.shared_lists:
                shutil.rmtree(os.path.dirname(self.shared_lists), ignore_errors=True)
            self.request_stop()

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # SIGUSR1: the operator's --force for a reload the guards refused.
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.request_reload(force=True))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    def request_reload(self, force: bool = False) -> None:
        self.supervisor.spawn("reload", self.reload(force=force))

    def request_stop(self) -> None:
        self.supervisor.spawn("stop", self.stop())

    async def reload(self, force: bool = False) -> bool:
        """SIGHUP: re-read the configuration file and every list file, then apply what can
        change live (``peers``, ``policy``, ``logging.level``, ``log_whitelisted`` and ``mask_imsi``,
        ``store.lists``, ``sync.guards``) in one step; anything else that changed is named as needing a restart. A
        configuration or list file that does not validate, or lists the guards refuse
        (``force`` overrides them), changes nothing and says why."""
        new = self.config
        if self.config_path is not None:
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                self.metrics.reloads_failed += 1
                self.log.error("config_reload_failed", error=str(exc), action="nothing changed")
                return False
            if self.worker_index:  # as cmd_serve set it up: worker i serves metrics on port + i
                metrics = msgspec.structs.replace(new.metrics, port=new.metrics.port + self.worker_index)
                new = msgspec.structs.replace(new, metrics=metrics)
        if not await self.lists.reload(new, force):
            return False
        self._apply_config(new)
        return True

    def _apply_config(self, new: Config) -> None:
        """Apply the sections of ``new`` that can change live; name the others that changed."""
        old = self.config
        plan = plan_reload(old, new)
        self.config = self.lists.config = config = plan.config
        if config.logging != old.logging:
            if config.logging.level != old.logging.level:
                set_level(config.logging.level)
            self.reporting.configure(config)
        if config.policy != old.policy:
            self.app.policy = config.policy.decision_policy()
            self.settings.screening = dataclasses.replace(
                self.settings.screening, check_destination_realm=config.policy.check_destination_realm
            )
            if self.sbi is not None:
                self.sbi.set_policy(config.policy)
        if uses_fast_path(config) != uses_fast_path(old):
            self.settings.fast_paths = fast_paths(config, self.app)
            for conn in self.connections:
                if conn.core is not None:
                    conn.core.refresh_fast_paths()
        if config.peers != old.peers:
            policy = peer_policy(config.peers)
            self.settings.policy = policy
            self.settings.watchdog_interval = config.peers.watchdog_interval_s  # new connections
            for conn in list(self.connections):
                core = conn.core
                if core is None or core.peer is None:
                    continue
                peer = core.peer
                code, reason = admits(peer, policy, core.remote_ip)
                if code != SUCCESS:
                    self.log.warning("peer_removed", peer=peer.origin_host, reason=reason, action="DPR sent")
                    conn.stop(DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU)
        if plan.applied or plan.restart_needed:
            self.log.info(
                "config_reloaded", applied=list(plan.applied), restart_needed=list(plan.restart_needed) or None
            )

    async def stop(self, cause: int = DISCONNECT_REBOOTING) -> None:
        """Stop accepting, answer what is in flight, DPR to every open peer, wait for their
        DPAs (bounded; requests arriving meanwhile are answered), then close everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.log.info("stopping", peers=len(self.registry))
        if self._loop_lag is not None:
            self._loop_lag.stop()
        for server in self.servers:
            server.close()
        # Answer what is in flight (Redis confirmations, bounded by their timeout) before
        # the DPR; requests that still arrive after it are answered too (peer.py, Closing).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while loop.time() < deadline and any(c.core is not None and c.core.in_flight for c in self.connections):
            await asyncio.sleep(0.005)
        for conn in list(self.connections):
            conn.stop(cause)
        waits = [c.closed.wait() for c in list(self.connections)]
        if waits:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=self.config.diameter.dpa_timeout_s + 1
            )
            for p in pending:
                p.cancel()
        for conn in list(self.connections):
            conn.abort()
        if self.redis_lists is not None:
            await self.redis_lists.stop()
        if self.sbi is not None:
            await self.sbi.close()
        if self.sightings is not None:
            left = await self.sightings.stop(timeout=2.0)
            if left:
                self.log.warning("sightings_undelivered", count=left)
        await self.supervisor.stop()
        if self.detection is not None:
            await self.detection.close()
        self._stopped.set()
        self.log.info("stopped")

    async def run(self, install_signals: bool = True) -> None:
        await self.start()
        # What start-up built (modules, dictionaries, lists, config) lives as long as the
        # process: out of the collector's sight, full collections under load stay short.
        gc.freeze()
        if install_signals:
            self.install_signal_handlers()
        await self._stopped.wait()


def run_node(
    config: Config,
    config_path: str | None = None,
    *,
    use_uvloop: bool = True,
    reuse_port: bool = False,
    shared_lists: str | None = None,
    worker_index: int | None = None,
    parent_fd: int | None = None,
) -> None:
    """Run a node until SIGTERM/SIGINT (or, for a worker, until its supervisor is gone:
    ``parent_fd`` reads end-of-file); uvloop when it is installed."""
    runner: Callable[..., Any] = asyncio.run
    if use_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass

    async def main() -> None:
        node = Node(config, config_path, reuse_port, shared_lists, worker_index)
        if parent_fd is not None:
            node.watch_parent(parent_fd)
        await node.run()

    runner(main())


__all__ = ["Node", "PeerState", "StartError", "run_node"]
