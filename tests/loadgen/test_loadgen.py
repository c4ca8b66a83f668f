"""``s13eir load``: histogram, schedule, mix, wire format, and runs against real EIR nodes."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import random
import struct
import time
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from diameter.message import Message
from diameter.message.avp.grouped import ExperimentalResult, ProxyInfo
from diameter.message.commands import DeviceWatchdogRequest, MeIdentityCheckAnswer
from hypothesis import given
from hypothesis import strategies as st

from s13eir.config_loading import config_from_mapping
from s13eir.loadgen.cli import load_main
from s13eir.loadgen.client import mme_budget, split_mmes
from s13eir.loadgen.connection import MmeConnection, Traffic
from s13eir.loadgen.echo import serve_echo
from s13eir.loadgen.histogram import MAX_VALUE_US, Histogram, bucket_bounds, bucket_index
from s13eir.loadgen.imeis import (
    Combo,
    ImeiFileError,
    MixError,
    generate_workload,
    load_oracle,
    parse_mix,
    read_imeis_file,
)
from s13eir.loadgen.schedule import OpenLoopSchedule
from s13eir.loadgen.stats import Stats
from s13eir.loadgen.wire import (
    EQUIPMENT_UNKNOWN,
    SESSION_COUNTER_DIGITS,
    AnswerReader,
    EcrEncoder,
    ecr_body,
    outcome,
    parse_outcome,
    scan_answer,
)
from s13eir.s13.fastpath import scan_ecr
from tests.conftest import ROOT, RunningNode, node_config, running_node
from tests.load_helpers import JSON_KEYS, load_args, run_load, sample_config

# -- histogram ----------------------------------------------------------------------------

values = st.lists(st.integers(min_value=0, max_value=MAX_VALUE_US), min_size=1, max_size=400)


def nearest_rank(sorted_values: list[int], p: float) -> int:
    if p >= 100:
        return sorted_values[-1]
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@given(values, st.floats(min_value=0, max_value=100))
def test_percentile_within_one_percent(data: list[int], p: float) -> None:
    h = Histogram()
    h.record_many(data)
    exact = nearest_rank(sorted(data), p)
    assert abs(h.percentile(p) - exact) <= 0.01 * exact
    assert h.percentile(100) == max(data)
    assert h.total == len(data) and h.min == min(data) and h.max == max(data) and h.sum == sum(data)


@given(values, values)
def test_merge_is_the_histogram_of_the_union(a: list[int], b: list[int]) -> None:
    ha, hb, hu = Histogram(), Histogram(), Histogram()
    ha.record_many(a)
    hb.record_many(b)
    hu.record_many(a + b)
    ha.merge(hb)
    assert ha.counts == hu.counts
    assert (ha.total, ha.sum, ha.min, ha.max) == (hu.total, hu.sum, hu.min, hu.max)
    for p in (50, 90, 99, 99.9):
        assert ha.percentile(p) == hu.percentile(p)
    # shipped between processes: pickle and the JSON form lose nothing
    assert pickle.loads(pickle.dumps(ha)).counts == hu.counts
    assert Histogram.from_dict(json.loads(json.dumps(ha.to_dict()))).counts == hu.counts


@given(st.integers(min_value=0, max_value=MAX_VALUE_US))
def test_buckets_are_one_percent_wide(v: int) -> None:
    low, high = bucket_bounds(bucket_index(v))
    assert low <= v <= high
    assert high - low <= max(0, low // 100)


def test_histogram_edges() -> None:
    h = Histogram()
    assert h.percentile(99) == 0
    h.record(-5)
    h.record(10 * MAX_VALUE_US)  # beyond the range: last bucket, exact max kept
    assert h.percentile(0) == 0 and h.percentile(100) == 10 * MAX_VALUE_US
    empty = Histogram()
    empty.merge(h)
    assert empty.counts == h.counts and empty.min == h.min


# -- open-loop schedule ----------------------------------------------------------------------


@given(
    rate=st.floats(min_value=0.5, max_value=1e6),
    mmes=st.integers(min_value=1, max_value=9),
    procs=st.integers(min_value=1, max_value=4),
    end=st.integers(min_value=0, max_value=300),
)
def test_schedule_slots_are_shared_out_exactly_once(rate: float, mmes: int, procs: int, end: int) -> None:
    seen: list[int] = []
    for share in split_mmes(mmes, procs):
        sched = OpenLoopSchedule(rate, mmes, share.first, share.mmes)
        own = [sched.global_slot(m) for m in range(sched.own_slots_before(end))]
        assert own == sorted(own)  # each process walks its slots in time order
        assert all(share.first <= sched.mme_of(k) < share.first + share.mmes for k in own)
        offsets = [sched.offset_ns(k) for k in own]
        assert offsets == sorted(offsets)
        seen.extend(own)
    assert sorted(seen) == list(range(end))


@given(rate=st.floats(min_value=0.5, max_value=1e6), t=st.integers(min_value=0, max_value=10**11))
def test_schedule_rate_and_boundaries(rate: float, t: int) -> None:
    sched = OpenLoopSchedule(rate, 3)
    k = sched.first_slot_at(t)
    assert sched.offset_ns(k) >= t
    assert k == 0 or sched.offset_ns(k - 1) < t
    # slots before t: rate * t, to within one
    assert abs(k - rate * t / 1e9) <= 1


def test_schedule_rejects_bad_input() -> None:
    for kwargs in ({"rate": 0}, {"rate": float("nan")}, {"rate": 1, "total_mmes": 0}):
        with pytest.raises(ValueError):
            OpenLoopSchedule(**{"rate": 1.0, "total_mmes": 1, **kwargs})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OpenLoopSchedule(1.0, 2, first_mme=1, mmes=2)


def test_closed_loop_budget_adds_up() -> None:
    assert [mme_budget(i, 3, 10) for i in range(3)] == [4, 3, 3]
    assert mme_budget(0, 3, None) == -1
    assert [(s.first, s.mmes) for s in split_mmes(5, 2)] == [(0, 3), (3, 2)]
    assert len(split_mmes(2, 8)) == 2


# -- mix and IMEIs ---------------------------------------------------------------------------


def test_parse_mix() -> None:
    assert parse_mix("") == {}
    assert parse_mix("black=0.01, grey=2%,unknown=0.05,malformed=0.001") == {
        "black": 0.01,
        "grey": 0.02,
        "unknown": 0.05,
        "malformed": 0.001,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("purple=0.1", "unknown kind 'purple'"),
        ("black", "expected KIND=FRACTION"),
        ("black=0.1,,grey=0.1", "expected KIND=FRACTION"),
        ("black=lots", "is not a number"),
        ("black=-0.1", "between 0 and 1"),
        ("black=1.5", "between 0 and 1"),
        ("black=nan", "between 0 and 1"),
        ("black=0.6,grey=0.6", "add up to 1.2"),
        ("black=0.1,black=0.2", "given twice"),
    ],
)
def test_parse_mix_errors(spec: str, message: str) -> None:
    with pytest.raises(MixError, match=message):
        parse_mix(spec)


def test_listed_kinds_need_the_lists() -> None:
    with pytest.raises(MixError, match="need --config"):
        generate_workload(parse_mix("black=0.1,grey=0.1"), random.Random(1))


def test_generated_workload_without_lists() -> None:
    wl = generate_workload(parse_mix("unknown=0.2,malformed=0.1"), random.Random(7), deck_size=1000)
    assert len(wl.deck) == 1000
    kinds = [wl.combos[i].kind for i in wl.deck]
    assert kinds.count("unknown") == 200 and kinds.count("malformed") == 100 and kinds.count("rest") == 700
    for c in wl.combos:
        if c.kind == "malformed":
            assert c.expected == 5004
            assert not (len(c.imei) in (14, 15) and c.imei.isdigit())
        else:
            assert c.expected == 0 and len(c.imei) in (14, 15) and c.imei.isdigit()
        assert c.sv is not None and len(c.sv) == 2
        assert c.imsi is None or (c.imsi.startswith("00101") and len(c.imsi) == 15)
    # the same seed draws the same traffic
    again = generate_workload(parse_mix("unknown=0.2,malformed=0.1"), random.Random(7), deck_size=1000)
    assert again.combos == wl.combos and again.deck == wl.deck


def test_listed_workload_from_the_sample_lists() -> None:
    """Listed kinds come from the EIR's lists; expected verdicts from s13eir's engine."""
    _, oracle = load_oracle(str(ROOT / "config" / "eir.yaml"), random.Random(3))
    mix = parse_mix("black=0.2,grey=0.2,white=0.1,exception=0.1,unknown=0.1,malformed=0.1")
    wl = generate_workload(mix, random.Random(3), oracle, deck_size=2000)
    by_kind: dict[str, set[int]] = {}
    for c in wl.combos:
        by_kind.setdefault(c.kind, set()).add(c.expected)
    assert by_kind == {
        "black": {1},
        "grey": {2},
        "white": {0},
        "exception": {0},
        "unknown": {0},
        "rest": {0},
        "malformed": {5004},
    }
    exceptions = [c for c in wl.combos if c.kind == "exception"]
    assert {(c.imei[:14], c.imsi) for c in exceptions} == {("35209900176148", "001010000000001")}


def test_imeis_file(tmp_path: Path) -> None:
    path = tmp_path / "imeis.csv"
    path.write_text(
        "imei,expected,imsi\n# a comment\n35209900176148,BLACKLISTED\n35209900176148,whitelisted,001010000000001\n"
        "3545071234567X,5004\n35450712345675,UNKNOWN,\n"
    )
    wl = read_imeis_file(str(path), random.Random(1))
    assert [(c.imei, c.expected, c.imsi) for c in wl.combos] == [
        ("35209900176148", 1, None),
        ("35209900176148", 0, "001010000000001"),
        ("3545071234567X", 5004, None),
        ("35450712345675", EQUIPMENT_UNKNOWN, None),
    ]
    assert list(wl.deck) == [0, 1, 2, 3]
    for text, message in (
        ("35209900176148,PURPLE\n", ":1: 'PURPLE' is not"),
        ("35209900176148\n", ":1: 1 columns"),
        ("35209900176148,BLACKLISTED,12ab\n", "IMSI '12ab'"),
        ("imei,expected\n", "no rows"),
    ):
        path.write_text(text)
        with pytest.raises(ImeiFileError, match=message):
            read_imeis_file(str(path), random.Random(1))
    with pytest.raises(ImeiFileError, match="cannot read"):
        read_imeis_file(str(tmp_path / "missing.csv"), random.Random(1))


def test_parse_outcome() -> None:
    assert [parse_outcome(w) for w in ("WHITELISTED", "blacklisted", " GREYLISTED ", "UNKNOWN", "5004")] == [
        0,
        1,
        2,
        5422,
        5004,
    ]
    with pytest.raises(ValueError):
        parse_outcome("42")


# -- wire ------------------------------------------------------------------------------------


def test_ecr_template_is_a_valid_ecr_with_unique_ids() -> None:
    enc = EcrEncoder("mme7.s13eir.test", "s13eir.test", "eir.realm", 1700000000, 0xFFFFFFF0, 5)
    body = ecr_body("352099001761481", "001010000000001", "07")
    frames: list[bytes] = []
    for _ in range(20):
        out: list[bytes] = []
        enc.encode(body, out)
        frames.append(b"".join(out))
    assert len({len(f) for f in frames}) == 1  # fixed width: the length never changes
    msgs = [Message.from_bytes(f) for f in frames]
    for msg in msgs:
        assert (msg.header.command_code, msg.header.application_id) == (324, 16777252)
        assert msg.header.is_request and msg.header.is_proxyable
        assert msg.origin_host == b"mme7.s13eir.test" and msg.destination_realm == b"eir.realm"
        assert msg.terminal_information.imei == "352099001761481"
        assert msg.terminal_information.software_version == "07"
        assert msg.user_name == "001010000000001"
    sids = [m.session_id for m in msgs]
    assert len(set(sids)) == 20
    assert sids[0] == "mme7.s13eir.test;1700000000;" + "1".zfill(SESSION_COUNTER_DIGITS)
    assert len({m.header.hop_by_hop_identifier for m in msgs}) == 20  # wraps around 2**32 fine
    # the EIR's fast path takes it as is
    fast = scan_ecr(frames[0])
    assert fast is not None and fast.imei14 == "35209900176148" and fast.imsi == "001010000000001"


def _eca(**kw: Any) -> bytes:
    a = MeIdentityCheckAnswer()
    a.header.application_id = 16777252
    a.header.hop_by_hop_identifier = 77
    a.session_id = "mme1.s13eir.test;1;0000000001"
    a.auth_session_state = 1
    a.origin_host = b"eir.s13eir.test"
    a.origin_realm = b"s13eir.test"
    for key, value in kw.items():
        setattr(a, key, value)
    return bytes(a.as_bytes())


@given(
    kind=st.sampled_from(["status", "experimental", "error"]),
    status=st.integers(min_value=0, max_value=2),
    code=st.sampled_from([5004, 5005, 3002, 5422, 4001]),
    proxies=st.integers(min_value=0, max_value=3),
    offset=st.integers(min_value=0, max_value=64),
)
def test_scanner_reads_answers_built_by_python_diameter(
    kind: str, status: int, code: int, proxies: int, offset: int
) -> None:
    extra: dict[str, Any] = {}
    if proxies:
        extra["proxy_info"] = [ProxyInfo(proxy_host=b"relay.test", proxy_state=b"x" * i) for i in range(proxies)]
    if kind == "status":
        frame = _eca(result_code=2001, equipment_status=status, **extra)
        expected = (2001, -1, status)
    elif kind == "experimental":
        frame = _eca(experimental_result=ExperimentalResult(vendor_id=10415, experimental_result_code=code), **extra)
        expected = (-1, code, -1)
    else:
        frame = _eca(result_code=code, **extra)
        expected = (code, -1, -1)
    buf = b"\0" * offset + frame + b"\xff" * 8  # scanned in place inside a bigger buffer
    assert scan_answer(buf, offset, offset + len(frame)) == expected
    r, e, s = expected
    assert outcome(r, e, s) == (status if kind == "status" else code)


def _summary(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int, int] | None:
    scanned = scan_answer(buf, pos, end)
    if scanned is None:
        return None
    r, e, s = scanned
    return (r if r >= 0 else e), s, outcome(r, e, s)


@given(
    kinds=st.lists(st.sampled_from(["status", "experimental", "error", "no-session-id"]), min_size=1, max_size=6),
    status=st.integers(min_value=0, max_value=2),
    code=st.sampled_from([5004, 3002, 5422]),
    flips=st.lists(
        st.tuples(st.integers(min_value=20, max_value=400), st.integers(min_value=1, max_value=255)), max_size=3
    ),
    session=st.text(alphabet="abc;0123456789", min_size=1, max_size=40),
    limit=st.integers(min_value=0, max_value=3),
    first_length=st.none() | st.integers(min_value=0, max_value=80),
)
def test_answer_reader_says_what_the_scanner_says(
    kinds: list[str],
    status: int,
    code: int,
    flips: list[tuple[int, int]],
    session: str,
    limit: int,
    first_length: int | None,
) -> None:
    """The remembered summary of an answer's tail equals a scan of the whole answer, for
    well-formed answers with any Session-Id, answers corrupted anywhere after the header,
    answers without a leading Session-Id, and whether or not the tail was seen before."""
    reader = AnswerReader(limit)
    for kind in kinds * 2:  # every tail is read twice: once new, once remembered (or past the limit)
        if kind == "status":
            frame = _eca(session_id=session, result_code=2001, equipment_status=status)
        elif kind == "experimental":
            exp = ExperimentalResult(vendor_id=10415, experimental_result_code=code)
            frame = _eca(session_id=session, experimental_result=exp)
        elif kind == "error":
            frame = _eca(session_id=session, result_code=code)
        else:
            frame = _eca(session_id=session, result_code=2001, equipment_status=status)
            sid_end = 20 + ((struct.unpack_from("!I", frame, 24)[0] & 0xFFFFFF) + 3 & ~3)
            frame = frame[:20] + frame[sid_end:] + frame[20:sid_end]  # the Session-Id last
        mutated = bytearray(frame)
        for at, xor in flips:
            if at < len(mutated):
                mutated[at] ^= xor
        if first_length is not None:  # the first AVP's length, short, long or off the padding
            mutated[25:28] = first_length.to_bytes(3, "big")
        for buf in (bytes(mutated), mutated):
            assert reader.read(buf, 0, len(buf)) == _summary(buf, 0, len(buf))


def test_scanner_refuses_bad_lengths() -> None:
    frame = bytearray(_eca(result_code=2001, equipment_status=1))
    assert scan_answer(frame, 0, len(frame)) == (2001, -1, 1)
    broken = bytearray(frame)
    struct.pack_into("!I", broken, 24, (0x40 << 24) | 4000)  # Session-Id longer than the message
    assert scan_answer(broken, 0, len(broken)) is None
    assert scan_answer(frame, 0, len(frame) - 3) is None  # stray bytes after the last AVP


# -- one connection, without sockets ---------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 3868) if name == "sockname" else None

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def test_connection_answers_dwr_and_counts_late_answers() -> None:
    combo = Combo("35450712345675", None, "01", 0, "rest")
    traffic = Traffic([combo], [0], [ecr_body(combo.imei, None, "01")])
    stats = Stats()
    conn = MmeConnection("mme1.s13eir.test", "s13eir.test", 42, (100, 200), traffic, stats, 0, concurrency=2)
    transport = FakeTransport()
    conn.connection_made(cast(asyncio.Transport, transport))
    cer = Message.from_bytes(transport.written[0])
    assert cer.header.command_code == 257 and cer.origin_host == b"mme1.s13eir.test"

    dwr = DeviceWatchdogRequest()
    dwr.header.hop_by_hop_identifier, dwr.header.end_to_end_identifier = 5, 6
    dwr.origin_host, dwr.origin_realm = b"eir.s13eir.test", b"s13eir.test"
    raw = bytes(dwr.as_bytes())
    conn.data_received(raw[:7])  # split across reads
    conn.data_received(raw[7:])
    dwa = Message.from_bytes(transport.written[-1])
    assert dwa.header.command_code == 280 and not dwa.header.is_request
    assert (dwa.header.hop_by_hop_identifier, dwa.header.end_to_end_identifier) == (5, 6)
    assert dwa.result_code == 2001 and dwa.origin_host == b"mme1.s13eir.test"

    conn.data_received(_eca(result_code=2001, equipment_status=0))  # hop-by-hop 77: nobody asked
    assert stats.late_answers == 1 and stats.answers == 0


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
def eir_config(tmp_path: Path) -> Path:
    return sample_config(tmp_path)


@pytest.fixture
async def open_eir() -> Any:
    """A node with the sample lists that accepts any MME."""
    async with running_node(config_from_mapping(node_config(peers={"allow_unknown": True}))) as rn:
        yield rn


def _check_clean(result: dict[str, Any]) -> None:
    assert result.keys() >= JSON_KEYS
    assert {"p50", "p90", "p99", "p999", "max"} <= result["latency_us"].keys()
    assert result["errors"] == 0, result["error_kinds"]
    assert result["mismatches"] == 0, result["mismatch_examples"]
    assert result["timeouts"] == 0
    assert result["requests"] > 0 and result["answers"] == result["requests"]
    assert sum(result["result_codes"].values()) == result["answers"]
    assert result["latency_us"]["p50"] <= result["latency_us"]["p99"] <= result["latency_us"]["max"]


MIX = "black=0.1,grey=0.1,unknown=0.1,malformed=0.05,exception=0.02"


@pytest.mark.parametrize("loop", [("--concurrency", "8"), ("--rate", "800"), ("--rate", "800", "--nap-us", "50")])
async def test_load_against_an_eir(
    open_eir: RunningNode, eir_config: Path, tmp_path: Path, loop: tuple[str, ...]
) -> None:
    peer = f"{open_eir.host}:{open_eir.port}"
    rc, result = await run_load(
        tmp_path, "--peer", peer, "--config", str(eir_config), "--mmes", "2", "--mix", MIX,
        "--duration", "1", "--warmup", "0.2", *loop,
    )  # fmt: skip
    _check_clean(result)
    assert rc == 0
    assert {"WHITELISTED", "BLACKLISTED", "GREYLISTED"} <= result["equipment_status"].keys()
    assert "5004" in result["result_codes"]
    assert result["params"]["mmes"] == 2 and result["params"]["mode"] == ("open" if loop[0] == "--rate" else "closed")
    assert result["warmup"]["requests"] > 0
    if loop[0] == "--rate":  # open loop: the rate is kept, whatever the answers do (napping or polling)
        assert 700 <= result["requests"] <= 801
        assert result["send_lag_us"] is not None
        assert result["params"]["nap_us"] == (50.0 if "--nap-us" in loop else 0.0)


async def test_load_with_two_processes(open_eir: RunningNode, eir_config: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    rc, result = await run_load(
        tmp_path, "--peer", f"{open_eir.host}:{open_eir.port}", "--config", str(eir_config), "--mmes", "3",
        "--procs", "2", "--mix", MIX, "--duration", "1", "--warmup", "0.2", "--concurrency", "4",
    )  # fmt: skip
    _check_clean(result)
    assert rc == 0 and result["mmes_connected"] == 3 and result["params"]["procs"] == 2
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("loop", [("--concurrency", "3"), ("--rate", "1000")])
async def test_request_cap_and_imeis_file(open_eir: RunningNode, tmp_path: Path, loop: tuple[str, str]) -> None:
    imeis = tmp_path / "imeis.csv"
    imeis.write_text(
        "imei,expected,imsi\n352099001761481,BLACKLISTED\n35209900176148,WHITELISTED,001010000000001\n"
        "352906110000017,GREYLISTED,001019999999999\n3545071234567X,5004\n35450712345675,WHITELISTED\n"
    )
    rc, result = await run_load(
        tmp_path, "--peer", f"{open_eir.host}:{open_eir.port}", "--imeis", str(imeis), "--mmes", "2",
        "--requests", "50", "--duration", "5", "--warmup", "0", *loop,
    )  # fmt: skip
    _check_clean(result)
    assert rc == 0 and result["requests"] == 50
    assert result["equipment_status"].keys() == {"WHITELISTED", "BLACKLISTED", "GREYLISTED"}
    assert result["elapsed_s"] < 1  # the cap, not --duration, ended the run


async def test_restrictive_policy_expects_equipment_unknown(tmp_path: Path, eir_config: Path) -> None:
    """With policy.unknown_imei: unknown, unlisted IMEIs are answered 5422 in Experimental-Result."""
    cfg = yaml.safe_load(eir_config.read_text())
    cfg["policy"]["unknown_imei"] = "unknown"
    eir_config.write_text(yaml.safe_dump(cfg))
    node = node_config(peers={"allow_unknown": True}, policy={"unknown_imei": "unknown"})
    async with running_node(config_from_mapping(node)) as rn:
        rc, result = await run_load(
            tmp_path, "--peer", f"{rn.host}:{rn.port}", "--config", str(eir_config), "--mix", "black=0.2",
            "--mmes", "2", "--duration", "0.5", "--warmup", "0",
        )  # fmt: skip
    _check_clean(result)
    assert rc == 0
    assert result["result_codes"].keys() == {"2001", "5422"}
    assert result["equipment_status"] == {"BLACKLISTED": result["result_codes"]["2001"]}


async def test_wrong_expectations_are_mismatches(open_eir: RunningNode, tmp_path: Path) -> None:
    imeis = tmp_path / "imeis.csv"
    imeis.write_text("35209900176148,WHITELISTED\n")  # it is blacklisted
    rc, result = await run_load(
        tmp_path, "--peer", f"{open_eir.host}:{open_eir.port}", "--imeis", str(imeis), "--requests", "5",
        "--warmup", "0",
    )  # fmt: skip
    assert rc == 1 and result["mismatches"] == 5 and result["answers"] == 5
    assert result["mismatch_examples"][0] == {
        "imei": "35209900176148",
        "imsi": None,
        "expected": "WHITELISTED",
        "got": "BLACKLISTED",
        "mme": "mme1.s13eir.test",
    }


async def test_refused_cer_is_an_error(eir: RunningNode, tmp_path: Path) -> None:
    """The `eir` fixture knows mme2.s13eir.test but not mme1: one MME gets CEA 3010."""
    rc, result = await run_load(
        tmp_path, "--peer", f"{eir.host}:{eir.port}", "--mmes", "2", "--duration", "0.3", "--warmup", "0",
    )  # fmt: skip
    assert rc == 1
    assert result["error_kinds"] == {"cer_refused": 1} and result["mmes_connected"] == 1
    assert "mme1.s13eir.test: CEA 3010" in result["error_examples"][0]
    assert result["answers"] == result["requests"] > 0 and result["mismatches"] == 0


class Mute(asyncio.Protocol):
    """Answers the CER, then ignores everything (no ECA, no DPA)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            hbh_e2e = data[12:20]
            body = struct.pack("!IIII", 268, (0x40 << 24) | 12, 2001, 264) + struct.pack("!I", (0x40 << 24) | 12)
            body += b"mute" + struct.pack("!II", 296, (0x40 << 24) | 12) + b"test"
            self.transport.write(struct.pack("!II", 0x01000000 | (20 + len(body)), 257) + bytes(4) + hbh_e2e + body)


async def test_unanswered_requests_time_out(tmp_path: Path) -> None:
    server = await asyncio.get_running_loop().create_server(Mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, result = await run_load(
            tmp_path, "--peer", f"127.0.0.1:{port}", "--duration", "0.2", "--warmup", "0", "--timeout", "0.3",
            "--concurrency", "4",
        )  # fmt: skip
    finally:
        server.close()
    assert rc == 1
    assert result["timeouts"] == result["requests"] == 4 and result["answers"] == 0
    assert result["error_kinds"] == {"dpa_timeout": 1}


async def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await load_main(load_args("--mix", "black=0.1", "--no-live")) == 2
    assert "need --config" in capsys.readouterr().err
    assert await load_main(load_args("--peer", "nohost", "--no-live")) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert await load_main(load_args("--echo", "--mix", "unknown=0.1", "--no-live")) == 2
    with pytest.raises(SystemExit):
        load_args("--rate", "100", "--concurrency", "3")
    with pytest.raises(SystemExit):
        load_args("--mmes", "0")


async def test_generator_ceiling_against_an_echo_server(tmp_path: Path) -> None:
    """The generator against a stand-in EIR that answers at once (in this same event loop,
    so this is a floor of the real ceiling, which `s13eir load --echo` measures)."""
    server = await serve_echo()
    port = server.sockets[0].getsockname()[1]
    try:
        rc, result = await run_load(
            tmp_path, "--peer", f"127.0.0.1:{port}", "--mmes", "2", "--duration", "1", "--warmup", "0.2",
            "--concurrency", "64", "--mix", "",  # only unlisted IMEIs: the echo says WHITELISTED to all
        )  # fmt: skip
    finally:
        server.close()
    _check_clean(result)
    assert rc == 0
    print(f"generator + echo in one process: {result['answers_per_s']:.0f} answers/s")
    assert result["answers_per_s"] > 2000


async def test_echo_option_runs_a_stand_in(tmp_path: Path) -> None:
    rc, result = await run_load(tmp_path, "--echo", "--duration", "0.5", "--warmup", "0.1", "--concurrency", "16")
    _check_clean(result)
    assert rc == 0 and result["params"]["echo"] is True


async def test_doic_mmes_shed_what_an_overloaded_eir_asks(eir_config: Path, tmp_path: Path) -> None:
    """A held event loop (sustained) overloads the node in the middle of a run: its answers carry
    OC-OLR, the --doic MMEs do not send that share (abated), nothing times out, and the report's
    end is followed. Refused with 3004 is only a share of what was sent during the stall, before
    the first report arrived (the node is still behind): after it, a DOIC peer sheds by itself."""
    overload = {"delay_ms": 20, "step_percent": 50, "hold_s": 0.5, "validity_s": 5}
    cfg = node_config(peers={"allow_unknown": True}, diameter={"overload": overload})
    async with running_node(config_from_mapping(cfg)) as rn:

        async def stall() -> None:
            await asyncio.sleep(0.6)
            for _ in range(3):  # a loop that cannot keep up for half a second
                time.sleep(0.15)
                await asyncio.sleep(0)

        held = asyncio.ensure_future(stall())
        rc, result = await run_load(
            tmp_path, "--peer", f"{rn.host}:{rn.port}", "--config", str(eir_config), "--mmes", "2",
            "--rate", "800", "--duration", "3", "--warmup", "0.2", "--doic",
        )  # fmt: skip
        await held
        reduction = rn.node.overload.reduction
    _check_clean(result)
    assert rc == 0 and result["params"]["doic"] is True
    assert result["abated"] > 0 and result["doic_reports"] >= 2
    assert result["busy"] <= 0.45 * 800  # at most what the MMEs sent during the stall  # the report and its end
    assert 2300 <= result["requests"] + result["abated"] <= 2401  # the rate kept: abated, not lost
    assert reduction == 0
