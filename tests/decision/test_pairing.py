"""IMEI–IMSI pairing both ways: limits, fixed SIMs, authorization mode's automatic
pairing; and, with hypothesis, random operations against a plain model of sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s13eir.decision.pairing import PairingConfig, PairingError, PairingResult, Pairings

IMEI, OTHER = "35209900176148", "35450712345675"


def imsi(n: int) -> str:
    return f"21401{n:010d}"


def test_a_paired_imei_refuses_other_subscribers_and_keeps_origins() -> None:
    p = Pairings(PairingConfig(enabled=True, max_imsis_per_imei=2))
    assert p.check(IMEI, imsi(1), 0) is PairingResult.NOT_PAIRED  # no pair: pairing says nothing
    p.pair(IMEI, imsi(1), "import", 10)
    p.pair(IMEI, imsi(2), "feed", 20)
    p.pair(IMEI, imsi(1), "operator", 30)  # again: the first origin stays
    assert p.pairs(IMEI)[imsi(1)].origin == "import" and p.pairs(IMEI)[imsi(1)].t == 10
    assert p.check(IMEI, imsi(2), 40) is PairingResult.PAIRED
    broke = p.check(IMEI, imsi(3), 40)
    assert broke is PairingResult.IMEI_PAIRED_ELSEWHERE and broke.breaks
    with pytest.raises(PairingError, match="the most it may"):
        p.pair(IMEI, imsi(3), "operator", 50)
    assert p.check(IMEI, None, 50) is PairingResult.NOT_PAIRED and len(p) == 2
    assert p.unpair(IMEI, imsi(1)) and not p.unpair(IMEI, imsi(1))


def test_a_fixed_sim_works_only_in_its_imei() -> None:
    p = Pairings(PairingConfig(enabled=True))
    p.lock(imsi(1), IMEI, "operator", 0)
    assert p.check(IMEI, imsi(1), 1) is PairingResult.PAIRED
    assert p.check(OTHER, imsi(1), 1) is PairingResult.IMSI_LOCKED_ELSEWHERE
    with pytest.raises(PairingError):
        p.lock(imsi(1), OTHER, "operator", 2)  # one IMEI by default
    assert p.unlock(imsi(1), IMEI) and p.check(OTHER, imsi(1), 3) is PairingResult.NOT_PAIRED


def test_authorization_mode_pairs_what_it_sees_up_to_the_limit() -> None:
    p = Pairings(PairingConfig(enabled=True, auto_pair=True, max_imsis_per_imei=2))
    assert p.check(IMEI, imsi(1), 5) is PairingResult.AUTO_PAIRED
    assert p.pairs(IMEI)[imsi(1)].origin == "auto" and p.pairs(IMEI)[imsi(1)].t == 5
    assert p.check(IMEI, imsi(1), 6) is PairingResult.PAIRED
    assert p.check(IMEI, imsi(2), 7) is PairingResult.AUTO_PAIRED
    assert p.check(IMEI, imsi(3), 8) is PairingResult.IMEI_FULL and imsi(3) not in p.pairs(IMEI)


@settings(max_examples=300)
@given(
    st.integers(1, 3), st.integers(1, 2), st.booleans(),
    st.lists(st.tuples(st.sampled_from(["pair", "unpair", "lock", "unlock", "check"]),
                       st.sampled_from([IMEI, OTHER]), st.integers(0, 4)), max_size=40),
)  # fmt: skip
def test_random_operations_match_a_model_of_sets(k: int, lim: int, auto: bool, ops: list[tuple[str, str, int]]) -> None:
    p = Pairings(PairingConfig(enabled=True, max_imsis_per_imei=k, max_imeis_per_imsi=lim, auto_pair=auto))
    pairs: dict[str, list[str]] = {}
    locks: dict[str, set[str]] = {}
    for t, (op, imei, n) in enumerate(ops):
        s = imsi(n)
        mine, held = pairs.setdefault(imei, []), locks.setdefault(s, set())
        if op == "pair":
            if s not in mine and len(mine) >= k:
                with pytest.raises(PairingError):
                    p.pair(imei, s, "operator", t)
            else:
                p.pair(imei, s, "operator", t)
                mine.append(s) if s not in mine else None
        elif op == "unpair":
            assert p.unpair(imei, s) == (s in mine)
            mine.remove(s) if s in mine else None
        elif op == "lock":
            if imei not in held and len(held) >= lim:
                with pytest.raises(PairingError):
                    p.lock(s, imei, "operator", t)
            else:
                p.lock(s, imei, "operator", t)
                held.add(imei)
        elif op == "unlock":
            assert p.unlock(s, imei) == (imei in held)
            held.discard(imei)
        else:
            got = p.check(imei, s, t)
            if held and imei not in held:
                want = PairingResult.IMSI_LOCKED_ELSEWHERE
            elif s in mine:
                want = PairingResult.PAIRED
            elif auto and len(mine) >= k:
                want = PairingResult.IMEI_FULL
            elif auto:
                want = PairingResult.AUTO_PAIRED
                mine.append(s)
            elif mine:
                want = PairingResult.IMEI_PAIRED_ELSEWHERE
            else:
                want = PairingResult.PAIRED if held else PairingResult.NOT_PAIRED
            assert got is want
        assert list(p.pairs(imei)) == mine and set(p.locks(s)) == held
    assert len(p) == sum(len(v) for v in pairs.values())
