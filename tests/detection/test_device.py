"""A device's detection state as bytes: exact round trips (nodes compare-and-set the
bytes), and the runs of one context kept as their latest check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s13eir.detection.detector import Detector
from s13eir.detection.device import DeviceState, DeviceStateError
from s13eir.detection.observation import Observation, Rat
from s13eir.detection.rules import DetectionConfig, DistinctImsis, Rules
from tests.detection.test_detector import IMEI, PEERS, imsi

CONFIG = DetectionConfig(enabled=True, max_recent=8, rules=Rules(distinct_imsis=DistinctImsis(threshold=3)))

checks = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 30.0, 61.0, 3600.0, 86400.0, 1e-3]),  # time since the previous check
        st.one_of(st.none(), st.integers(0, 6).map(imsi)),
        st.sampled_from(sorted(PEERS)),
        st.sampled_from(list(Rat)),
        st.one_of(st.none(), st.sampled_from(["01", "02", "99", "x"])),
        st.one_of(st.none(), st.sampled_from("0123456789")),  # the 15th digit as sent
    ),
    max_size=40,
)


def applied(steps: list[tuple[float, str | None, str, Rat, str | None, str | None]]) -> DeviceState:
    d = Detector(CONFIG, PEERS)
    state, t = d.new_state(), 1.7e9 + 0.123
    for dt, who, peer, rat, sv, d15 in steps:
        t += dt
        d.apply(state, Observation(t, IMEI, who, peer, rat, sv, None if d15 is None else IMEI + d15), t)
    return state


@given(checks)
def test_a_state_round_trips_exactly(steps: list[tuple[float, str | None, str, Rat, str | None, str | None]]) -> None:
    state = applied(steps)
    data = state.encode()
    again = DeviceState.decode(data, IMEI, CONFIG.max_recent)
    assert again == state
    assert again.encode() == data  # the same bytes: compare-and-set compares them
    assert len(again.recent) <= CONFIG.max_recent


def test_a_run_of_one_context_is_kept_as_its_latest() -> None:
    d = Detector(CONFIG, PEERS)
    state = d.new_state()
    for t in (0.0, 100.0, 200.0):
        d.apply(state, Observation(t, IMEI, imsi(1), "mme-mad", Rat.EUTRAN), t)
    assert [o.t for o in state.recent] == [200.0]
    d.apply(state, Observation(300.0, IMEI, imsi(2), "mme-mad", Rat.EUTRAN), 300.0)
    d.apply(state, Observation(400.0, IMEI, imsi(1), "mme-mad", Rat.EUTRAN), 400.0)
    assert [(o.t, o.imsi) for o in state.recent] == [(200.0, imsi(1)), (300.0, imsi(2)), (400.0, imsi(1))]


NOT_STATES = [
    b"",
    b"\x00",
    b"\x91\x02",
    b"\x98\x01\x00\xc0\x90\x91\x92\x05\x01\x90\x90\x90",  # an IMSI beyond the string table
    b"\x98\x02\x00\xc0\x90\x90\x90\x90\x90",  # a format this version does not write
    b"\xff" * 9,
]


@pytest.mark.parametrize("data", NOT_STATES)
def test_bytes_that_are_no_state_are_refused(data: bytes) -> None:
    with pytest.raises(DeviceStateError):
        DeviceState.decode(data, IMEI, 8)
