"""The pure N5g-eir request handling, without sockets: identifiers, content negotiation,
the order of checks, and (property) every answer to any request is one the OpenAPI
document declares."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from s13eir.decision.model import UnknownPolicy
from s13eir.decision.policy import MalformedImeiPolicy, Policy
from s13eir.sbi.identifiers import PeiKind, parse_pei, supi_imsi
from s13eir.sbi.n5g_eir import Limits, N5gEir, Request, accepts_json
from tests.sbi_helpers import OPENAPI, PEI_BLACK, RESOURCE, sample_check

SERVICE = N5gEir(sample_check(), Policy(), Limits(max_header_list_size=4096, max_uri_length=1024))


def ask(query: str = "", **kw: object) -> tuple[int, dict[str, object]]:
    answer = SERVICE.handle(Request(kw.pop("method", "GET"), RESOURCE + "?" + query, **kw), 0.0)  # type: ignore[arg-type]
    return answer.status, msgspec.json.decode(answer.body)


@pytest.mark.parametrize(
    ("pei", "kind", "key"),
    [
        ("imei-352099001761481", PeiKind.IMEI, "35209900176148"),
        ("imei-352099001761480", PeiKind.IMEI, "35209900176148"),  # any 15th digit: spare or check
        ("imeisv-3520990017614801", PeiKind.IMEI, "35209900176148"),
        ("imei-35209900176148", PeiKind.MALFORMED_IMEI, None),  # 14 digits: TS 29.571 wants 15
        ("imei-3520990017614811", PeiKind.MALFORMED_IMEI, None),  # an IMEISV sent as imei-
        ("imei-٣٥٢٠٩٩٠٠١٧٦١٤٨١", PeiKind.MALFORMED_IMEI, None),  # non-ASCII digits
        ("imeisv-352099001761481", PeiKind.MALFORMED_IMEI, None),
        ("mac-00-11-22-aa-BB-cc", PeiKind.NOT_IMEI, None),
        ("mac-00-11-22-aa-bb-cc-untrusted", PeiKind.NOT_IMEI, None),
        ("eui-00-11-22-33-44-55-66-77", PeiKind.NOT_IMEI, None),
        ("eui64-00-11-22-33-44-55-66-77", PeiKind.UNSUPPORTED, None),  # TS 29.571 says eui-, not eui64-
        ("mac-00-11-22-33-44", PeiKind.UNSUPPORTED, None),
        ("352099001761481", PeiKind.UNSUPPORTED, None),  # a bare IMEI is not a PEI
        ("IMEI-352099001761481", PeiKind.UNSUPPORTED, None),  # prefixes are lower case
    ],
)
def test_pei_forms(pei: str, kind: PeiKind, key: str | None) -> None:
    parsed = parse_pei(pei)
    assert (parsed.kind, parsed.imei14) == (kind, key)


def test_supi_forms() -> None:
    assert supi_imsi("imsi-001010000000001") == "001010000000001"
    assert supi_imsi("imsi-00101") == "00101"
    for other in ("imsi-0010", "imsi-0010100000000012", "imsi-00101abc", "nai-001010000000001@x", "gci-x", "x"):
        assert supi_imsi(other) is None, other


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json, application/json", True),
        ("*/*", True),
        ("application/*;q=0.1", True),
        ("text/html", False),
        ("application/problem+json", False),
        ("application/json;q=0", False),
        ("application/json;q=0, */*", False),  # the most specific range decides
        ("*/*;q=0, application/json;q=0.5", True),
        ("application/json;q=zz", True),  # an unreadable q counts as 1
    ],
)
def test_accept(accept: str | None, ok: bool) -> None:
    assert accepts_json(accept) is ok


def test_the_order_of_checks() -> None:
    # Size limits come before anything else, then the resource, the method, Accept, content, query.
    big = Request("POST", "/nope", header_list_size=5000)
    assert SERVICE.handle(big, 0).status == 431
    assert SERVICE.handle(Request("POST", "/" + "x" * 2000), 0).status == 414
    assert SERVICE.handle(Request("POST", "/nope"), 0).status == 404
    assert SERVICE.handle(Request("POST", RESOURCE, accept="text/html"), 0).status == 405
    assert SERVICE.handle(Request("GET", RESOURCE, accept="text/html", body_length=3), 0).status == 406
    assert SERVICE.handle(Request("GET", RESOURCE, body_length=3, content_type="text/plain"), 0).status == 415
    assert ask("", body_length=3)[1]["cause"] == "INVALID_MSG_FORMAT"
    assert ask("")[1]["cause"] == "MANDATORY_QUERY_PARAM_MISSING"
    assert ask(f"pei={PEI_BLACK}")[1] == {"status": "BLACKLISTED"}


def test_unknown_parameters_are_listed_together() -> None:
    status, body = ask(f"pei={PEI_BLACK}&a=1&b&pei2=x")
    assert status == 400 and body["cause"] == "INVALID_QUERY_PARAM"
    assert [p["param"] for p in body["invalidParams"]] == ["query a", "query b", "query pei2"]  # type: ignore[attr-defined]


def test_mac_pei_in_restrictive_and_permissive_mode() -> None:
    for unknown, expected in ((UnknownPolicy.UNKNOWN, 404), (UnknownPolicy.GREYLISTED, 200)):
        service = N5gEir(sample_check(unknown), Policy(unknown))
        answer = service.handle(Request("GET", RESOURCE + "?pei=mac-00-11-22-33-44-55"), 0)
        assert answer.status == expected
        assert answer.outcome.imei14 is None


def test_malformed_policy_verdict_has_the_s13_reason() -> None:
    service = N5gEir(sample_check(), Policy(malformed_imei=MalformedImeiPolicy.GREYLISTED))
    answer = service.handle(Request("GET", RESOURCE + "?pei=imei-12&supi=imsi-001010000000001"), 0)
    assert answer.status == 200
    v = answer.outcome.verdict
    assert v is not None and (v.reason.rule.value, v.reason.source, v.reason.entry) == (
        "malformed", "policy.malformed_imei", "imei-12")  # fmt: skip
    assert answer.outcome.imsi is None  # an IMSI plays no part in a malformed-IMEI verdict, as on S13


query_values = st.one_of(
    st.sampled_from(["imei-352099001761481", "imeisv-3520990017614801", "imei-1", "mac-00-11-22-33-44-55", ""]),
    st.text(max_size=30),
)
query_names = st.sampled_from(["pei", "supi", "gpsi", "supported-features", "x", "", "pei%00"])


@given(
    st.lists(st.tuples(query_names, query_values), max_size=5),
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.sampled_from([RESOURCE, "/", "/n5g-eir-eic/v2/equipment-status", RESOURCE + "/x"]),
    st.one_of(st.none(), st.sampled_from(["application/json", "text/html", "*/*;q=0"])),
    st.integers(0, 2),
    st.sampled_from(list(UnknownPolicy)),
)
def test_every_answer_is_documented(
    params: list[tuple[str, str]], method: str, path: str, accept: str | None, body: int, unknown: UnknownPolicy
) -> None:
    from urllib.parse import quote

    query = "&".join(f"{quote(k, safe='%')}={quote(v)}" for k, v in params)
    service = N5gEir(sample_check(unknown), Policy(unknown))
    answer = service.handle(Request(method, f"{path}?{query}", accept=accept, body_length=body), 0.0)
    headers = {k.decode(): v.decode() for k, v in answer.headers}
    OPENAPI.check(answer.status, headers, answer.body)
    if answer.status == 200:
        # A 200 only for a query the document's parameter schemas accept.
        assert OPENAPI.check_query(dict(params)), params


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


def test_the_verdict_log_line() -> None:
    from s13eir.sbi.report import outcome_logger

    log = _Log()
    on_outcome = outcome_logger(log, mask=True)  # type: ignore[arg-type]
    query = f"pei={PEI_BLACK}&supi=imsi-001010000000002&gpsi=msisdn-15550100001"
    on_outcome(SERVICE.handle(Request("GET", f"{RESOURCE}?{query}", client="10.0.0.9:5000"), 0).outcome)
    on_outcome(SERVICE.handle(Request("GET", f"{RESOURCE}?pei=imei-354507123456754"), 0).outcome)  # white: not logged
    on_outcome(SERVICE.handle(Request("GET", RESOURCE), 0).outcome)
    assert [e for e, _ in log.lines] == ["verdict", "verdict"]
    black = log.lines[0][1]
    assert black["status"] == "BLACKLISTED" and black["rule"] == "imei" and black["list"] == "black"
    assert black["imei"] == "35209900176148" and black["interface"] == "n5g-eir" and black["http_status"] == 200
    assert black["imsi"] == "00101********02" and black["supi"] == "imsi-00101********02"
    assert black["source"].endswith("blacklist.csv") and black["reason"] == "IMEI found on local stolen list"  # type: ignore[union-attr]
    assert black["client"] == "10.0.0.9:5000"
    assert log.lines[1][1]["cause"] == "MANDATORY_QUERY_PARAM_MISSING"
