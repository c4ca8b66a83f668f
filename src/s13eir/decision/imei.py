"""IMEI handling (3GPP TS 23.003 clause 6).

An IMEI is TAC (8 digits) + SNR (6 digits) + a check digit (CD) or a spare digit;
an IMEISV replaces the CD with a 2-digit software version (SVN). The equipment is
identified by TAC+SNR, so every list and every lookup is keyed on those 14 digits.

The check digit is never required to be valid: TS 23.003 says it is not transmitted
by the MS (the spare digit is sent as 0 instead), and an EIR that rejected a bad
Luhn digit would let a cloned or mistyped IMEI slip past the lists as "malformed".

These functions run once per request, so they use ``str.isascii()`` + ``str.isdigit()``
(both C-level) instead of regular expressions. ``isascii()`` matters: ``"٣".isdigit()``
is True for Arabic-Indic digits and ``int()`` would happily convert them.
"""

from __future__ import annotations

__all__ = [
    "IMEI_KEY_LEN",
    "TAC_LEN",
    "luhn_check_digit",
    "normalize_imei",
    "normalize_list_imei",
    "pei_to_imei14",
    "tac",
]

IMEI_KEY_LEN = 14  # TAC + SNR: the lookup key
TAC_LEN = 8

_PEI_IMEI = "imei-"
_PEI_IMEISV = "imeisv-"


def luhn_check_digit(imei14: str) -> int:
    """The IMEI check digit of 14 digits (TS 23.003 Annex B; Luhn).

    Doubles the digits in even positions (2nd, 4th, ... counting from the left,
    i.e. every other digit starting next to the check digit) and sums the digits
    of the products together with the undoubled digits.
    """
    if len(imei14) != IMEI_KEY_LEN or not (imei14.isascii() and imei14.isdigit()):
        raise ValueError(f"expected 14 ASCII digits, got {imei14!r}")
    total = 0
    for i, ch in enumerate(imei14):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9  # sum of the two digits of a product <= 18
        total += d
    return (10 - total % 10) % 10


def normalize_imei(value: str) -> str | None:
    """The 14-digit lookup key of an IMEI as carried on S13, or None if malformed.

    Accepts exactly 14 ASCII digits, or 15 where the 15th is the check digit or the
    spare digit 0 (not validated, see the module docstring). Nothing is stripped:
    an AVP with padding or a software version belongs in the malformed-IMEI policy.
    """
    n = len(value)
    if (n == 14 or n == 15) and value.isascii() and value.isdigit():
        return value if n == 14 else value[:14]
    return None


def normalize_list_imei(value: str) -> str | None:
    """The 14-digit key of an IMEI written in a list file, or None if malformed.

    More lenient than :func:`normalize_imei` because lists come from CEIR exports:
    surrounding whitespace is ignored and 16-digit IMEISVs are accepted.
    """
    value = value.strip()
    n = len(value)
    if 14 <= n <= 16 and value.isascii() and value.isdigit():
        return value[:14]
    return None


def tac(imei14: str) -> str:
    """The Type Allocation Code: the first 8 digits of the IMEI."""
    return imei14[:TAC_LEN]


def pei_to_imei14(pei: str) -> str | None:
    """The 14-digit key from a 5G Permanent Equipment Identifier (TS 29.571 ``Pei``).

    Only the IMEI forms are usable by an EIR: ``imei-`` + 15 digits and
    ``imeisv-`` + 16 digits. MAC and EUI-64 PEIs (wireline access) return None.
    """
    if pei.startswith(_PEI_IMEI):
        digits = pei[5:]
        if len(digits) == 15 and digits.isascii() and digits.isdigit():
            return digits[:14]
    elif pei.startswith(_PEI_IMEISV):
        digits = pei[7:]
        if len(digits) == 16 and digits.isascii() and digits.isdigit():
            return digits[:14]
    return None
