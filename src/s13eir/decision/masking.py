"""Masking subscriber identities (IMSI, MSISDN, SUPI, GPSI) for logs and events: one
setting (``logging.mask_imsi``) covers every field that carries one. Pure."""

from __future__ import annotations


def mask_imsi(imsi: str | None) -> str | None:
    """Keep MCC+MNC (first 5 digits) and the last 2 digits: enough to tell networks and
    subscribers apart in a log without storing the identity."""
    if imsi is None:
        return None
    if len(imsi) <= 7:  # nothing would be hidden: hide it all
        return "*" * len(imsi)
    return imsi[:5] + "*" * (len(imsi) - 7) + imsi[-2:]


def mask_msisdn(msisdn: str) -> str:
    """Keep the first 3 digits (a country code, at most) and the last 2."""
    if len(msisdn) <= 5:
        return "*" * len(msisdn)
    return msisdn[:3] + "*" * (len(msisdn) - 5) + msisdn[-2:]


def mask_supi(supi: str | None) -> str | None:
    """A SUPI (TS 29.571): ``imsi-<IMSI>`` masked as an IMSI; any other form (``nai-``)
    keeps only its type."""
    if supi is None:
        return None
    if supi.startswith("imsi-"):
        return "imsi-" + (mask_imsi(supi[5:]) or "")
    kind, sep, rest = supi.partition("-")
    return kind + sep + "*" * len(rest) if sep else "*" * len(supi)


def mask_gpsi(gpsi: str | None) -> str | None:
    """A GPSI: ``msisdn-<MSISDN>`` masked as an MSISDN; ``extid-<local>@<domain>`` keeps
    the domain; anything else keeps only its type."""
    if gpsi is None:
        return None
    kind, sep, rest = gpsi.partition("-")
    if not sep:
        return "*" * len(gpsi)
    if kind == "msisdn":
        return "msisdn-" + mask_msisdn(rest)
    local, at, domain = rest.rpartition("@")
    if kind == "extid" and at:
        return f"extid-{'*' * len(local)}@{domain}"
    return kind + sep + "*" * len(rest)


def mask_entry(rule: str, entry: str) -> str:
    """A verdict's matching entry: an exception pair's ``IMEI/IMSI`` carries an IMSI."""
    if rule == "exception" and "/" in entry:
        imei, _, imsi = entry.partition("/")
        return f"{imei}/{mask_imsi(imsi)}"
    return entry
