"""Shared pieces of the N5g-eir tests: the sample-list check, a server in the test's loop,
certificates, the OpenAPI checker and a raw HTTP/2 client for malformed traffic."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import jsonschema
import msgspec
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from s13eir.config import PolicyConfig, SbiConfig
from s13eir.decision.model import UnknownPolicy
from s13eir.decision.policy import Policy
from s13eir.lists.formats import ListSpec, load_lists
from s13eir.lists.snapshot import ListSnapshot
from s13eir.observability.metrics import Metrics
from s13eir.sbi.n5g_eir import SbiOutcome, lists_check
from s13eir.sbi.server import SbiServer, start_sbi
from tests.conftest import SAMPLE_LISTS

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT / "src" / "s13eir" / "sbi" / "openapi.yaml"
RESOURCE = "/n5g-eir-eic/v1/equipment-status"

SNAPSHOT = load_lists(
    [
        ListSpec(str(SAMPLE_LISTS / "blacklist.csv"), "dirbs-blacklist"),
        ListSpec(str(SAMPLE_LISTS / "greylist.csv"), "csv"),
        ListSpec(str(SAMPLE_LISTS / "exceptions.csv"), "dirbs-exceptions"),
        ListSpec(str(SAMPLE_LISTS / "rules.yaml"), "rules-yaml"),
    ]
)

# config/lists/README.md, as PEIs (the 15th digit is the check digit)
PEI_BLACK = "imei-352099001761481"
PEI_GREY = "imei-352906110000017"
PEI_UNLISTED = "imei-354507123456754"
PEI_RANGE_GREY = "imeisv-3569870000123401"
PEI_TAC_BLACK = "imei-860000123456708"
IMSI_EXCEPTION = "001010000000001"


def sample_check(unknown: UnknownPolicy = UnknownPolicy.WHITELISTED, snapshot: ListSnapshot = SNAPSHOT) -> Any:
    policy = Policy(unknown)
    return lists_check(lambda: snapshot, lambda: policy)


@dataclass
class RunningSbi:
    server: SbiServer
    outcomes: list[SbiOutcome] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def url(self) -> str:
        host, port = self.server.bound
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{port}"

    tls: bool = False


@contextlib.asynccontextmanager
async def running_sbi(
    *, policy: PolicyConfig | None = None, check: Any = None, node_name: str | None = "eir.test", **cfg: Any
) -> AsyncIterator[RunningSbi]:
    """start_sbi on a free loopback port with the sample lists (until the node wires it)."""
    cfg.setdefault("port", 0)
    sbi_cfg = msgspec.convert(cfg, SbiConfig)
    policy = policy or PolicyConfig()
    outcomes: list[SbiOutcome] = []
    metrics = Metrics()
    server = await start_sbi(
        sbi_cfg,
        check or sample_check(policy.unknown_imei),
        outcomes.append,
        metrics,
        policy=policy,
        node_name=node_name,
    )
    try:
        yield RunningSbi(server, outcomes, metrics, tls=sbi_cfg.tls)
    finally:
        await server.close()


def h2_client(base_url: str, **kw: Any) -> httpx.AsyncClient:
    """An HTTP/2-only client: h2c with prior knowledge for http://, ALPN h2 for https://."""
    return httpx.AsyncClient(base_url=base_url, http1=False, http2=True, timeout=10, **kw)


# -- certificates ------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("s13eir test CA", ca_key, "s13eir test CA", ca_key, ca=True)
    out: dict[str, Path] = {}
    for name, cn in (("server", "eir.s13eir.test"), ("client", "amf.s13eir.test")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(cn, key, "s13eir test CA", ca_key, ca=False)
        out[f"{name}_cert"] = directory / f"{name}.crt"
        out[f"{name}_key"] = directory / f"{name}.key"
        out[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{name}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(ca_path, out["server_cert"], out["server_key"], out["client_cert"], out["client_key"])


# -- the OpenAPI document as the oracle --------------------------------------------------


class OpenApi:
    """Checks an answer against the response the document declares for its status."""

    def __init__(self, path: Path = OPENAPI_PATH) -> None:
        self.doc = yaml.safe_load(path.read_text())
        self.operation = self.doc["paths"]["/equipment-status"]["get"]

    def check(self, status: int, headers: httpx.Headers | dict[str, str], body: bytes) -> None:
        responses = self.operation["responses"]
        spec = responses.get(str(status)) or responses.get("default")
        assert spec is not None, f"status {status} is not in openapi.yaml"
        for name, header in (spec.get("headers") or {}).items():
            if header.get("required"):
                assert name.lower() in {k.lower() for k in headers}, f"{status} lacks header {name}"
        content = spec.get("content")
        ctype = headers.get("content-type")
        if not content:
            assert not body, f"{status} has a body the document does not declare"
            return
        assert ctype in content, f"{status}: content-type {ctype!r} not in {sorted(content)}"
        schema = {**content[ctype]["schema"], "components": self.doc["components"]}
        jsonschema.validate(msgspec.json.decode(body), schema, cls=jsonschema.Draft4Validator)

    def check_query(self, params: dict[str, str]) -> bool:
        """Whether query values satisfy the parameter schemas (the document's view of validity)."""
        declared = {p["name"]: p for p in self.operation["parameters"]}
        for name, value in params.items():
            if name not in declared:
                return False
            schema = {**declared[name]["schema"], "components": self.doc["components"]}
            if not jsonschema.Draft4Validator(schema).is_valid(value):
                return False
        return all(name in params for name, p in declared.items() if p.get("required"))


OPENAPI = OpenApi()


def check_response(response: httpx.Response) -> None:
    OPENAPI.check(response.status_code, response.headers, response.content)


# -- a raw HTTP/2 client for traffic httpx would refuse to send -------------------------


class RawH2:
    """h2's client state machine over an asyncio stream: send anything, read events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.responses: dict[int, dict[str, Any]] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.resets: dict[int, int] = {}

    @classmethod
    async def connect(cls, host: str, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection(host, port)
        raw = cls(reader, writer)
        raw.conn.initiate_connection()
        await raw.flush()
        return raw

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    def request(self, path: str, extra: list[tuple[bytes, bytes]] | None = None, end_stream: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1"),
            (b":path", path.encode()),
        ]
        self.conn.send_headers(sid, headers + (extra or []), end_stream=end_stream)
        self.responses[sid] = {"status": None, "body": b"", "done": False}
        return sid

    async def pump(self, until: Any, timeout: float = 5.0) -> None:
        """Read and process events until ``until()`` is true, the connection ends, or timeout."""
        async with asyncio.timeout(timeout):
            while not until():
                data = await self.reader.read(65536)
                if not data:
                    return
                for ev in self.conn.receive_data(data):
                    self._on(ev)
                await self.flush()

    def _on(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            hdrs = dict(ev.headers or [])
            self.responses[ev.stream_id]["status"] = int(hdrs[b":status"])
            self.responses[ev.stream_id]["headers"] = hdrs
        elif isinstance(ev, h2.events.DataReceived):
            self.responses[ev.stream_id]["body"] += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.responses[ev.stream_id]["done"] = True
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id] = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.terminated = ev

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def check_raw(response: dict[str, Any]) -> None:
    """The OpenAPI check for an answer read by :class:`RawH2`."""
    headers = {k.decode(): v.decode() for k, v in response["headers"].items() if not k.startswith(b":")}
    OPENAPI.check(response["status"], headers, response["body"])


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body
