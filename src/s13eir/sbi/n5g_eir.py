"""TS 29.511 N5g-eir_EquipmentIdentityCheck: one HTTP request in, one answer out. Pure.

``GET /n5g-eir-eic/v1/equipment-status?pei=...[&supi=...][&gpsi=...][&supported-features=...]``

The HTTP/2 adapter (:mod:`s13eir.sbi.server`) hands over the request's pseudo-headers and
the few headers that matter; this module decides everything else: routing, method,
access token, content negotiation, query parameters, the verdict and its encoding. The
verdict comes from ``check(imei14, imsi)``, which the node builds on the same
``decide`` and list snapshot as S13, so a phone gets the same answer on both interfaces.

Checks run in the order a client can act on them: size limits (431, 414), the resource
(400 INVALID_API, 404), the method (405), the token (401, 403), Accept (406), content
(415, 400), the query (400), and finally the verdict (200, 404 ERROR_EQUIPMENT_UNKNOWN).
Error causes are those of TS 29.500 table 5.2.7.2-1; see README.md for the choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

import msgspec

from s13eir.decision.model import EquipmentStatus, Facts, Verdict
from s13eir.decision.policy import Policy, Refusal
from s13eir.sbi.identifiers import Pei, PeiKind, parse_pei, supi_imsi, supported_features_ok

if TYPE_CHECKING:  # the verifier brings in JWT and cryptography (and ssl, socket)
    from s13eir.sbi.oauth2 import TokenVerifier

__all__ = [
    "API_NAME",
    "API_VERSION",
    "RESOURCE",
    "Answer",
    "Check",
    "Limits",
    "N5gEir",
    "Request",
    "SbiOutcome",
    "accepts_json",
    "lists_check",
]

API_NAME = "n5g-eir-eic"
API_VERSION = "v1"
RESOURCE = f"/{API_NAME}/{API_VERSION}/equipment-status"

# The verdict, None when there is none (500), or an awaitable of either when the
# store must ask Redis first.
# (imei14, imsi, software version): the software version's 2 digits of an imeisv- PEI.
Check = Callable[[str, str | None, str | None], "Verdict | Awaitable[Verdict | None] | None"]
Headers = tuple[tuple[bytes, bytes], ...]

_JSON = b"application/json"
_PROBLEM = b"application/problem+json"
_JSON_HEADERS: Headers = ((b"content-type", _JSON),)
_PROBLEM_HEADERS: Headers = ((b"content-type", _PROBLEM),)
_STATUS_BODY = {s: msgspec.json.encode({"status": s.name}) for s in EquipmentStatus}
_OPTIONAL = ("supi", "gpsi", "supported-features")
_JSON_RANGES = {"application/json": 2, "application/*": 1, "*/*": 0}  # media ranges admitting JSON, by specificity
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    """What the adapter read from one HTTP/2 request."""

    method: str
    path: str  # :path, with the query
    accept: str | None = None
    content_type: str | None = None
    authorization: str | None = None
    body_length: int = 0  # content bytes received (GET has none)
    header_list_size: int = 0  # RFC 9113 §6.5.2: names + values + 32 per field
    client: str = ""  # remote address, for the log
    user_agent: str | None = None  # TS 29.500 §5.2.2.2: the consumer, "AMF-<instance id or FQDN>"


@dataclass(frozen=True, slots=True)
class SbiOutcome:
    """One answered request, for logs and metrics (the N5g-eir twin of ``s13.Outcome``)."""

    http_status: int
    cause: str  # TS 29.500/29.511 ProblemDetails cause; "" for 200 and plain HTTP errors
    verdict: Verdict | None
    pei: str | None = None
    imei14: str | None = None
    supi: str | None = None
    imsi: str | None = None  # the IMSI that took part in the decision
    gpsi: str | None = None
    client: str = ""
    detail: str = ""
    consumer: str = ""  # the NF that asked, as its User-Agent names it ("" when it does not)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Headers  # without :status and content-length, which the adapter adds
    body: bytes
    outcome: SbiOutcome


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_list_size: int = 8192
    max_uri_length: int = 2048


class FactsSource(Protocol):
    def facts(self, imei14: str, imsi: str | None) -> Facts: ...


def lists_check(lists: Callable[[], FactsSource], policy: Callable[[], Policy]) -> Check:
    """The ``check`` for ``start_sbi`` of a node whose lists are all in memory: S13's own
    decision on the current lists, under the current policy (both called per request:
    a reload swaps them)."""

    def check(imei14: str, imsi: str | None, sv: str | None = None) -> Verdict:
        return policy().verdict(lists().facts(imei14, imsi), imsi, imei14)

    return check


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header admits application/json (RFC 9110 §12.5.1).

    The most specific matching range decides, so ``application/json;q=0, */*`` refuses
    JSON. A header that cannot be read is treated as absent (anything goes).
    """
    if not accept or not accept.strip():
        return True
    best_rank, best_q = -1, 0.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        rank = _JSON_RANGES.get(media, -1)
        if rank < best_rank or rank < 0:
            continue
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 1.0
        best_rank, best_q = rank, q
    return best_rank >= 0 and best_q > 0


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _problem(
    status: int,
    detail: str,
    cause: str = "",
    invalid: list[dict[str, str]] | None = None,
    headers: Headers = (),
    outcome: SbiOutcome | None = None,
    client: str = "",
) -> Answer:
    body: dict[str, object] = {"title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if cause:
        body["cause"] = cause
    if invalid:
        body["invalidParams"] = invalid
    out = outcome or SbiOutcome(status, cause, None, client=client, detail=detail)
    return Answer(status, _PROBLEM_HEADERS + headers, msgspec.json.encode(body), out)


def overloaded(client: str = "") -> Answer:
    """What admission control answers an AMF for the share it sheds: 503 with the cause
    NF_CONGESTION_RISK (TS 29.500 table 5.2.7.2-1) and Retry-After, the N5g-eir
    counterpart of S13's 3004: the AMF retries another EIR instance or later."""
    return _problem(503, "overloaded: shedding load", "NF_CONGESTION_RISK", headers=((b"retry-after", b"1"),),
                    client=client)  # fmt: skip


def _param_error(cause: str, name: str, reason: str, client: str, pei: str | None = None) -> Answer:
    """400 for one query parameter; ``param`` is "query <name>" (TS 29.571 InvalidParam)."""
    return _problem(
        400,
        f"query parameter {name}: {reason}",
        cause,
        [{"param": f"query {name}", "reason": reason}],
        outcome=SbiOutcome(400, cause, None, pei=pei, client=client, detail=f"{name}: {reason}"),
    )


@dataclass(frozen=True, slots=True)
class DeferredAnswer:
    """An answer waiting for the store (a Bloom positive confirmed in Redis)."""

    pending: Awaitable[Verdict | None]
    finish: Callable[[Verdict | None, str], Answer]


class N5gEir:
    """The EquipmentIdentityCheck service: one instance per server, shared by connections."""

    def __init__(
        self,
        check: Check,
        policy: Policy | None = None,
        limits: Limits | None = None,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.check = check
        self.policy = policy or Policy()
        self.limits = limits or Limits()
        self.verifier = verifier

    def handle(self, req: Request, now: float) -> Answer | DeferredAnswer:
        """The answer to ``req``; ``now`` (epoch seconds) is only used to check token expiry."""
        client = req.client
        if req.header_list_size > self.limits.max_header_list_size:
            return _problem(431, f"header fields exceed {self.limits.max_header_list_size} bytes", client=client)
        if len(req.path) > self.limits.max_uri_length:
            return _problem(414, f"the URI exceeds {self.limits.max_uri_length} bytes", client=client)
        path, _, query = req.path.partition("?")
        if path != RESOURCE:
            return self._no_resource(path, client)
        if req.method != "GET":
            return _problem(405, f"{req.method} is not allowed here: use GET", headers=((b"allow", b"GET"),),
                            client=client)  # fmt: skip
        if self.verifier is not None:
            failure = self.verifier.verify(req.authorization, now)
            if failure is not None:
                return _problem(failure.status, failure.detail, client=client,
                                headers=((b"www-authenticate", failure.www_authenticate.encode()),))  # fmt: skip
        if not accepts_json(req.accept):
            return _problem(406, "the answer is application/json, which Accept excludes", client=client)
        if req.body_length:
            media = _media_type(req.content_type)
            if media and media != "application/json":
                return _problem(415, f"GET takes no content, and never {media}", client=client)
            return _problem(400, "GET /equipment-status takes no content", "INVALID_MSG_FORMAT", client=client)
        return self._query(query, client, req.user_agent or "")

    def _no_resource(self, path: str, client: str) -> Answer:
        segments = path.split("/")
        # /{apiName}/{apiVersion}/...: an API or version we do not serve is INVALID_API
        # (TS 29.500 table 5.2.7.2-1); any other unknown path is a plain 404.
        if len(segments) >= 3 and segments[2][:1] == "v" and segments[2][1:].isdigit():
            if (segments[1], segments[2]) != (API_NAME, API_VERSION):
                detail = f"API {segments[1]}/{segments[2]} is not served here; use {API_NAME}/{API_VERSION}"
                return _problem(400, detail, "INVALID_API", client=client)
            return _problem(404, f"no resource {path}", "RESOURCE_URI_STRUCTURE_NOT_FOUND", client=client)
        return _problem(404, f"no resource {path}", client=client)

    def _query(self, query: str, client: str, consumer: str = "") -> Answer | DeferredAnswer:
        params: dict[str, str | None] = {}  # None: the value is not UTF-8 once percent-decoded
        unknown: list[str] = []
        for pair in query.split("&"):
            if not pair:
                continue
            raw_name, _, raw_value = pair.partition("=")
            name = unquote(raw_name)
            value: str | None
            try:
                value = unquote(raw_value, errors="strict")
            except UnicodeDecodeError:
                value = None
            if name != "pei" and name not in _OPTIONAL:
                unknown.append(name)
            elif name in params:
                cause = "MANDATORY_QUERY_PARAM_INCORRECT" if name == "pei" else "OPTIONAL_QUERY_PARAM_INCORRECT"
                return _param_error(cause, name, "given more than once", client)
            else:
                params[name] = value
        if unknown:
            # INVALID_QUERY_PARAM: "an unsupported query parameter in the URI" (TS 29.500).
            invalid = [{"param": f"query {n}", "reason": "not a parameter of GetEquipmentStatus"} for n in unknown]
            return _problem(400, f"unsupported query parameter(s): {', '.join(unknown)}", "INVALID_QUERY_PARAM",
                            invalid, client=client)  # fmt: skip
        if "pei" not in params:
            return _param_error("MANDATORY_QUERY_PARAM_MISSING", "pei", "the PEI is required", client)
        pei = params["pei"]
        if not pei:  # empty, or not UTF-8: fails the Pei pattern's ".+" / is no string at all
            return _param_error("MANDATORY_QUERY_PARAM_INCORRECT", "pei", "not a valid PEI", client)
        for name in _OPTIONAL:
            if name not in params:
                continue
            value = params[name]
            ok = value is not None and (supported_features_ok(value) if name == "supported-features" else bool(value))
            if not ok:
                return _param_error("OPTIONAL_QUERY_PARAM_INCORRECT", name, "not a valid value", client, pei)
        return self._verdict(pei, params.get("supi"), params.get("gpsi"), client, consumer)

    def _verdict(self, pei: str, supi: str | None, gpsi: str | None, client: str,
                 consumer: str = "") -> Answer | DeferredAnswer:  # fmt: skip
        parsed = parse_pei(pei)
        imsi = supi_imsi(supi) if supi is not None else None
        verdict: Verdict | None
        detail = ""
        if parsed.kind is PeiKind.IMEI:
            assert parsed.imei14 is not None
            result: Verdict | Awaitable[Verdict | None] | None
            try:
                sv = pei[-2:] if pei.startswith("imeisv-") else None
                result = self.check(parsed.imei14, imsi, sv)
            except Exception as exc:  # a failing store must cost one answer, not the connection
                result, detail = None, f"check failed: {exc!r}"
            if inspect.isawaitable(result):
                # The store had to ask Redis: the server awaits it and then finishes the answer.
                return DeferredAnswer(
                    result, lambda v, d: self._finish_imei(v, d, pei, parsed, supi, imsi, gpsi, client, consumer)
                )
            return self._finish_imei(result, detail, pei, parsed, supi, imsi, gpsi, client, consumer)
        elif parsed.kind is PeiKind.MALFORMED_IMEI:
            malformed = self.policy.malformed(pei)  # what S13 answers a bad IMEI AVP
            if isinstance(malformed, Refusal):  # S13's 5004
                return _param_error("MANDATORY_QUERY_PARAM_INCORRECT", "pei", parsed.problem, client, pei)
            verdict, detail = malformed, parsed.problem
        elif parsed.kind is PeiKind.NOT_IMEI:
            verdict, detail = self.policy.unlisted(), parsed.problem
        else:
            return _param_error("MANDATORY_QUERY_PARAM_INCORRECT", "pei", parsed.problem, client, pei)
        return self._finish(verdict, detail, pei, parsed, supi, imsi, gpsi, client, consumer)

    def _finish_imei(
        self, verdict: Verdict | None, detail: str, pei: str, parsed: Pei, supi: str | None, imsi: str | None,
        gpsi: str | None, client: str, consumer: str = "",
    ) -> Answer:  # fmt: skip
        if verdict is None:
            out = SbiOutcome(500, "SYSTEM_FAILURE", None, pei, parsed.imei14, supi, imsi, gpsi, client,
                             detail or "no verdict available")  # fmt: skip
            return _problem(500, "the equipment lists cannot be consulted", "SYSTEM_FAILURE", outcome=out)
        return self._finish(verdict, detail, pei, parsed, supi, imsi, gpsi, client, consumer)

    def _finish(
        self, verdict: Verdict, detail: str, pei: str, parsed: Pei, supi: str | None, imsi: str | None,
        gpsi: str | None, client: str, consumer: str = "",
    ) -> Answer:  # fmt: skip
        imsi_used = imsi if parsed.kind is PeiKind.IMEI else None
        if verdict.status is None:
            out = SbiOutcome(404, "ERROR_EQUIPMENT_UNKNOWN", verdict, pei, parsed.imei14, supi, imsi_used, gpsi,
                             client, detail, consumer)  # fmt: skip
            return _problem(404, "the PEI is on no list (restrictive mode)", "ERROR_EQUIPMENT_UNKNOWN", outcome=out)
        out = SbiOutcome(200, "", verdict, pei, parsed.imei14, supi, imsi_used, gpsi, client, detail, consumer)
        return Answer(200, _JSON_HEADERS, _STATUS_BODY[verdict.status], out)
