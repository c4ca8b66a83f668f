"""IMEI parsing and check digits (TS 23.003 clause 6 and Annex B)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s13eir.decision.imei import (
    luhn_check_digit,
    normalize_imei,
    normalize_list_imei,
    pei_to_imei14,
    tac,
)

ASCII_DIGITS = "0123456789"
digits = st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=14)
FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("imei14", "check"),
    [
        ("49015420323751", 8),  # the TS 23.003 Annex B example
        ("35209900176148", 1),
        ("00000000000000", 0),
        ("35698700009999", 2),
        ("86000012345670", 8),
    ],
)
def test_luhn_known_values(imei14: str, check: int) -> None:
    assert luhn_check_digit(imei14) == check


@FAST
@given(digits)
def test_luhn_digit_makes_the_luhn_sum_divisible_by_ten(imei14: str) -> None:
    full = imei14 + str(luhn_check_digit(imei14))
    total = 0
    for i, ch in enumerate(reversed(full)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    assert total % 10 == 0


@pytest.mark.parametrize("bad", ["", "4901542032375", "490154203237518", "4901542032375X", "٤9015420323751"])
def test_luhn_rejects_non_keys(bad: str) -> None:
    with pytest.raises(ValueError):
        luhn_check_digit(bad)


@FAST
@given(digits)
def test_fourteen_digits_are_their_own_key(imei14: str) -> None:
    assert normalize_imei(imei14) == imei14


@FAST
@given(digits, st.sampled_from(ASCII_DIGITS))
def test_fifteenth_digit_is_dropped_whatever_it_is(imei14: str, fifteenth: str) -> None:
    # Check digit, spare digit 0 or a wrong check digit: never validated.
    assert normalize_imei(imei14 + fifteenth) == imei14


@FAST
@given(st.text(max_size=20))
def test_normalize_accepts_only_14_or_15_ascii_digits(value: str) -> None:
    expected_ok = len(value) in (14, 15) and all(c in ASCII_DIGITS for c in value)
    result = normalize_imei(value)
    assert (result is not None) == expected_ok
    if result is not None:
        assert result == value[:14]
        assert normalize_imei(result) == result  # idempotent


@FAST
@given(digits, st.integers(0, 13), st.characters(exclude_characters=ASCII_DIGITS))
def test_one_non_digit_makes_it_malformed(imei14: str, pos: int, ch: str) -> None:
    assert normalize_imei(imei14[:pos] + ch + imei14[pos + 1 :]) is None


@pytest.mark.parametrize(
    "bad",
    [
        "3520990017614",  # 13 digits
        "3520990017614812",  # 16 digits: an IMEISV is not an IMEI AVP value
        " 35209900176148",
        "35209900176148 ",
        "٣٥٢٠٩٩٠٠١٧٦١٤٨",  # Arabic-Indic digits: isdigit() is True, int() accepts them
        "３５２０９９００１７６１４８",  # fullwidth digits
        "3520990017614_8",
        "+35209900176148",
    ],
)
def test_normalize_rejects(bad: str) -> None:
    assert normalize_imei(bad) is None


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("35209900176148", "35209900176148"),
        ("352099001761481", "35209900176148"),
        ("3520990017614801", "35209900176148"),  # IMEISV: TAC + SNR + SVN
        ("  352099001761481\t", "35209900176148"),
        ("3520990017614", None),
        ("35209900176148012", None),
        ("3520990017614X", None),
        ("٣٥٢٠٩٩٠٠١٧٦١٤٨", None),
    ],
)
def test_normalize_list_imei(value: str, key: str | None) -> None:
    assert normalize_list_imei(value) == key


@FAST
@given(st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=16))
def test_list_imei_key_is_first_14_digits_and_idempotent(value: str) -> None:
    key = normalize_list_imei(value)
    assert key == value[:14]
    assert normalize_list_imei(key) == key
    assert normalize_imei(key) == key


def test_tac() -> None:
    assert tac("35209900176148") == "35209900"


@pytest.mark.parametrize(
    ("pei", "key"),
    [
        ("imei-352099001761481", "35209900176148"),
        ("imeisv-3520990017614801", "35209900176148"),
        ("imei-35209900176148", None),  # PEI IMEIs carry 15 digits
        ("imei-3520990017614812", None),
        ("imeisv-352099001761481", None),
        ("IMEI-352099001761481", None),
        ("imei-35209900176148X", None),
        ("imei-٣٥٢٠٩٩٠٠١٧٦١٤٨١", None),
        ("mac-00-11-22-33-44-55", None),
        ("352099001761481", None),
        ("", None),
    ],
)
def test_pei_to_imei14(pei: str, key: str | None) -> None:
    assert pei_to_imei14(pei) == key


@FAST
@given(digits, st.sampled_from(ASCII_DIGITS), st.text(alphabet=ASCII_DIGITS, min_size=2, max_size=2))
def test_pei_forms_agree_with_normalize(imei14: str, cd: str, svn: str) -> None:
    assert pei_to_imei14("imei-" + imei14 + cd) == normalize_imei(imei14 + cd) == imei14
    assert pei_to_imei14("imeisv-" + imei14 + svn) == imei14
