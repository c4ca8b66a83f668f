"""The TS 29.571 identifiers an N5g-eir request carries: Pei, Supi, Gpsi, SupportedFeatures. Pure.

The 29.571 patterns end in ``|.+`` (Pei, Supi, Gpsi), so a schema check accepts any
non-empty string and the EIR has to decide what each form means to it:

* ``imei-`` + 15 digits and ``imeisv-`` + 16 digits are the IMEI forms; both map to the
  same 14-digit key (TAC + SNR) that S13 looks up (:func:`pei_to_imei14`).
* A PEI that starts with ``imei-``/``imeisv-`` but has other content is a malformed IMEI:
  the S13 ``policy.malformed_imei`` decides, exactly as for a bad IMEI AVP.
* ``mac-``/``eui-`` PEIs (wireline 5G-RG / FN-RG, TS 23.316) are valid equipment
  identities that no IMEI-keyed list can hold: they are unknown equipment.
* Anything else, and a malformed ``mac-``/``eui-``, is a value the EIR cannot evaluate.

Checks use ``isascii()`` + ``isdigit()`` like :mod:`s13eir.decision.imei`: ``"٣".isdigit()``
is True, and a non-ASCII digit must not reach ``int()`` in the list lookup.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from s13eir.decision.imei import pei_to_imei14

__all__ = ["Pei", "PeiKind", "gpsi_ok", "parse_pei", "supi_imsi", "supported_features_ok"]

# TS 29.571 Pei alternatives other than the IMEI forms and the catch-all.
_MAC = re.compile(r"mac(-[0-9a-fA-F]{2}){6}(-untrusted)?")
_EUI = re.compile(r"eui(-[0-9a-fA-F]{2}){8}")
_HEX = re.compile(r"[0-9A-Fa-f]*")


class PeiKind(enum.Enum):
    IMEI = "imei"  # imei-/imeisv- with the right digits: looked up
    MALFORMED_IMEI = "malformed_imei"  # imei-/imeisv- prefix, wrong content: policy.malformed_imei
    NOT_IMEI = "not_imei"  # a well-formed MAC or EUI-64 PEI: unknown equipment
    UNSUPPORTED = "unsupported"  # no PEI form we know, or a malformed MAC/EUI-64: 400


@dataclass(frozen=True, slots=True)
class Pei:
    kind: PeiKind
    imei14: str | None  # the lookup key, for PeiKind.IMEI only
    problem: str = ""  # why it is not usable, for the log and the 400 answer


def parse_pei(pei: str) -> Pei:
    imei14 = pei_to_imei14(pei)
    if imei14 is not None:
        return Pei(PeiKind.IMEI, imei14)
    if pei.startswith("imei-"):
        return Pei(PeiKind.MALFORMED_IMEI, None, "imei- must be followed by 15 digits")
    if pei.startswith("imeisv-"):
        return Pei(PeiKind.MALFORMED_IMEI, None, "imeisv- must be followed by 16 digits")
    if _MAC.fullmatch(pei) or _EUI.fullmatch(pei):
        return Pei(PeiKind.NOT_IMEI, None, "a MAC or EUI-64 PEI is not on any IMEI list")
    if pei.startswith(("mac-", "eui-")):
        return Pei(PeiKind.UNSUPPORTED, None, "mac- takes 6 and eui- 8 hex octets separated by '-'")
    return Pei(PeiKind.UNSUPPORTED, None, "not a PEI form this EIR evaluates (imei-, imeisv-, mac-, eui-)")


def supi_imsi(supi: str) -> str | None:
    """The IMSI of an ``imsi-`` SUPI with 5 to 15 digits, else None.

    Other SUPI forms (``nai-``, ``gci-``, ``gli-``, or an ``imsi-`` with other content) are
    valid per TS 29.571's ``|.+`` but name no IMSI, so they cannot match an IMEI+IMSI
    exception: the request is answered as if it carried no SUPI, as S13 treats a
    User-Name that is not an IMSI.
    """
    if supi.startswith("imsi-"):
        digits = supi[5:]
        if 5 <= len(digits) <= 15 and digits.isascii() and digits.isdigit():
            return digits
    return None


def gpsi_ok(gpsi: str) -> bool:
    """TS 29.571 Gpsi: any non-empty string (``msisdn-``/``extid-`` or the ``.+`` catch-all)."""
    return bool(gpsi)


def supported_features_ok(value: str) -> bool:
    """TS 29.571 SupportedFeatures: hexadecimal digits (possibly none)."""
    return _HEX.fullmatch(value) is not None
