"""NF registration with an NRF (TS 29.510 Nnrf_NFManagement): register, heartbeat, deregister.

* ``PUT {nrf}/nnrf-nfm/v1/nf-instances/{nfInstanceId}`` with our NFProfile (nfType 5G_EIR,
  one n5g-eir-eic service); the NRF answers 201 (or 200) with the profile it stored, whose
  ``heartBeatTimer`` sets the heartbeat period.
* Every heartBeatTimer seconds ``PATCH`` the same URI with the JSON Patch
  ``[{"op": "replace", "path": "/nfStatus", "value": "REGISTERED"}]``
  (``application/json-patch+json``); a 404 means the NRF dropped us, so register again.
* On shutdown ``DELETE`` the same URI.

The client runs as one background task: every request is bounded by ``timeout_s``,
failures are logged and retried with exponential backoff (with jitter, capped at
``retry_max_s``), and nothing here is ever awaited on the request path, so an NRF that is
down or slow never delays an answer. HTTP/2 as TS 29.500 requires (h2c prior knowledge
for http://, ALPN h2 for https://).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import ssl
import uuid
from typing import Any

import httpx
from structlog.typing import FilteringBoundLogger

from s13eir.config import SbiConfig
from s13eir.sbi.metrics import SbiMetrics
from s13eir.sbi.n5g_eir import API_NAME, API_VERSION
from s13eir.supervision import Supervisor

__all__ = ["API_FULL_VERSION", "NF_TYPE", "NrfClient", "nf_instance_id", "nf_profile"]

NF_TYPE = "5G_EIR"
API_FULL_VERSION = "1.2.0"  # TS 29.511 V17.3.0's API version: the last released one we implement
DEFAULT_HEARTBEAT_S = 60  # used until the NRF tells us its heartBeatTimer
_PATCH = b'[{"op":"replace","path":"/nfStatus","value":"REGISTERED"}]'


def nf_instance_id(cfg: SbiConfig, node_name: str | None) -> str:
    """The configured nfInstanceId, else one derived from the node identity and the SBI
    endpoint: stable across restarts with the same configuration (an NRF keeps one
    profile per id, so a fresh random id per restart would leave stale profiles)."""
    if cfg.nrf.nf_instance_id:
        return str(uuid.UUID(cfg.nrf.nf_instance_id))
    seed = f"s13eir:{node_name or ''}:{cfg.fqdn or cfg.address}:{cfg.port}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if ip.is_unspecified else ip  # a wildcard says nothing to a consumer


def nf_profile(cfg: SbiConfig, instance_id: str, port: int, heartbeat_s: int | None = None) -> dict[str, Any]:
    """Our NFProfile (TS 29.510 §6.1.6.2.2) with one NFService for n5g-eir-eic."""
    ip = _ip(cfg.address)
    endpoint: dict[str, Any] = {"transport": "TCP", "port": port}
    profile: dict[str, Any] = {"nfInstanceId": instance_id, "nfType": NF_TYPE, "nfStatus": "REGISTERED"}
    if cfg.fqdn:
        profile["fqdn"] = cfg.fqdn
    if isinstance(ip, ipaddress.IPv4Address):
        profile["ipv4Addresses"] = [str(ip)]
        endpoint["ipv4Address"] = str(ip)
    elif ip is not None:
        profile["ipv6Addresses"] = [str(ip)]
        endpoint["ipv6Address"] = str(ip)
    if heartbeat_s is not None:
        profile["heartBeatTimer"] = heartbeat_s
    service: dict[str, Any] = {
        "serviceInstanceId": f"{API_NAME}-1",
        "serviceName": API_NAME,
        "versions": [{"apiVersionInUri": API_VERSION, "apiFullVersion": API_FULL_VERSION}],
        "scheme": "https" if cfg.tls else "http",
        "nfServiceStatus": "REGISTERED",
        "ipEndPoints": [endpoint],
    }
    if cfg.fqdn:
        service["fqdn"] = cfg.fqdn
    profile["nfServices"] = [service]
    return profile


class NrfClient:
    """Keeps our profile registered with one NRF; see the module docstring."""

    def __init__(
        self,
        cfg: SbiConfig,
        instance_id: str,
        port: int,
        metrics: SbiMetrics,
        log: FilteringBoundLogger,
        *,
        retry_min_s: float = 1.0,
    ) -> None:
        nrf = cfg.nrf
        assert nrf.url is not None
        self.instance_id = instance_id
        self.uri = f"{nrf.url.rstrip('/')}/nnrf-nfm/v1/nf-instances/{instance_id}"
        self.profile = nf_profile(cfg, instance_id, port, nrf.heartbeat_s)
        self.heartbeat_s = float(nrf.heartbeat_s or DEFAULT_HEARTBEAT_S)
        self.timeout_s = nrf.timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = nrf.retry_max_s
        self.metrics = metrics
        self.log = log
        self.registered = asyncio.Event()  # set while the NRF holds our profile (for tests and readiness)
        verify: ssl.SSLContext | bool = True
        if nrf.cafile:
            verify = ssl.create_default_context(cafile=nrf.cafile)
        self._http = httpx.AsyncClient(http1=False, http2=True, timeout=nrf.timeout_s, verify=verify)
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Register and heartbeat in the background (restarted with backoff if it crashes;
        not critical for answers: an AMF that found this EIR keeps using it)."""
        self._task = (supervisor or Supervisor()).start("nrf-client", self._run, critical=False)

    async def close(self) -> None:
        """Stop heartbeats and deregister (bounded by timeout_s); never raises."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.registered.is_set():
            status = await self._request("deregister", "DELETE")
            if status is not None:
                self.log.info("nrf_deregistered", status=status, nf_instance_id=self.instance_id)
            self._set_registered(False)
        await self._http.aclose()

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_min_s
        while True:
            if not await self._register():
                await asyncio.sleep(self._jitter(delay))
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_min_s
            wait = self.heartbeat_s
            while True:
                await asyncio.sleep(wait)
                status = await self._request("heartbeat", "PATCH", content=_PATCH,
                                             headers={"content-type": "application/json-patch+json"})  # fmt: skip
                if status == 404:
                    self.log.warning("nrf_profile_gone", nf_instance_id=self.instance_id)
                    self._set_registered(False)
                    break  # register again at once
                if status is not None and 200 <= status < 300:
                    wait, delay = self.heartbeat_s, self.retry_min_s
                else:
                    # Retry sooner than the period: the NRF suspends us after missed heartbeats.
                    wait = min(self._jitter(delay), self.heartbeat_s)
                    delay = min(delay * 2, self.retry_max_s)

    async def _register(self) -> bool:
        response = await self._send("register", "PUT", json=self.profile)
        if response is None:
            return False
        if response.status_code not in (200, 201):
            self.log.warning("nrf_register_refused", status=response.status_code, body=response.text[:300])
            return False
        timer = None
        with contextlib.suppress(ValueError):
            stored = response.json()
            timer = stored.get("heartBeatTimer") if isinstance(stored, dict) else None
        if isinstance(timer, int) and not isinstance(timer, bool) and timer > 0:
            self.heartbeat_s = float(timer)  # the NRF's value wins over the one we proposed
        self._set_registered(True)
        self.log.info("nrf_registered", status=response.status_code, nf_instance_id=self.instance_id,
                      heartbeat_s=self.heartbeat_s, nrf=self.uri)  # fmt: skip
        return True

    async def _request(self, operation: str, method: str, **kw: Any) -> int | None:
        response = await self._send(operation, method, **kw)
        return None if response is None else response.status_code

    async def _send(self, operation: str, method: str, **kw: Any) -> httpx.Response | None:
        """One bounded request; None (logged and counted) when it could not be made."""
        try:
            response = await asyncio.wait_for(self._http.request(method, self.uri, **kw), self.timeout_s)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            self.metrics.count_nrf(operation, "error")
            self.log.warning("nrf_request_failed", operation=operation, error=f"{type(exc).__name__}: {exc}")
            return None
        self.metrics.count_nrf(operation, str(response.status_code))
        if response.status_code >= 300 and operation != "register":
            self.log.warning("nrf_request_refused", operation=operation, status=response.status_code)
        return response

    def _set_registered(self, on: bool) -> None:
        self.metrics.nrf_registered = int(on)
        if on:
            self.registered.set()
        else:
            self.registered.clear()

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + self._rng.random() / 2)  # spread retries of many nodes
