"""Checking a message's AVPs against the dictionary (RFC 6733 §7, TS 29.272 §7.3).

Returns the first problem found as a ``Problem`` (result code, the AVP for
Failed-AVP, a short text for Error-Message) or None. The M-bit rule follows the
3GPP relaxation (TS 29.272 §7.3.1 note): an unknown AVP with M set is rejected
(5001), an unknown AVP with M clear is ignored, and a known AVP whose M bit
differs from the table is accepted as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import avp as avpcodec
from .avp import Avp, AvpLengthError, decode_avps
from .constants import (
    AVP_FLAG_MANDATORY,
    AVP_NOT_ALLOWED,
    AVP_OCCURS_TOO_MANY_TIMES,
    AVP_UNSUPPORTED,
    INVALID_AVP_LENGTH,
    INVALID_AVP_VALUE,
    MISSING_AVP,
)
from .dictionary import AvpDef, Dictionary, Grammar

_FIXED_SIZE = {
    "Integer32": 4, "Unsigned32": 4, "Float32": 4, "Enumerated": 4, "Time": 4,
    "Integer64": 8, "Unsigned64": 8, "Float64": 8,
}  # fmt: skip
_ADDRESS_SIZE = {1: 4, 2: 16}  # IANA address families: IPv4, IPv6
# Grouped AVPs inside grouped AVPs: S13 and the base protocol need 3 (a Failed-AVP holding
# a Proxy-Info); a peer sending hundreds costs CPU and, unbounded, the recursion limit.
MAX_AVP_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Problem:
    result_code: int
    failed_avp: bytes | None  # one encoded AVP (with padding) for Failed-AVP, or None
    message: str


def example_avp(d: AvpDef) -> bytes:
    """A zero-filled AVP of minimum length, as RFC 6733 §7.5 asks Failed-AVP to carry for 5005."""
    size = _FIXED_SIZE.get(d.type, 0)
    if d.type == "Address":
        size = 6
    flags = AVP_FLAG_MANDATORY if d.m == "must" else 0
    return avpcodec.encode(d.code, b"\0" * size, vendor=d.vendor or None, flags=flags)


def check_avps(
    avps: Sequence[Avp],
    grammar: Grammar,
    dictionary: Dictionary,
    ignored: frozenset[str] = frozenset(),
    max_depth: int = MAX_AVP_DEPTH,
) -> Problem | None:
    """Check one level of AVPs (a message body or a Grouped AVP's content). AVPs named in
    ``ignored`` are not checked at all (TS 29.272 §7.2.1: a receiver ignores them). A
    Grouped AVP nested deeper than ``max_depth`` is refused with 5004 (its header, empty,
    in Failed-AVP inside its parents)."""
    return _check_avps(avps, grammar, dictionary, ignored, max_depth)


def _check_avps(
    avps: Sequence[Avp], grammar: Grammar, dictionary: Dictionary, ignored: frozenset[str], depth_left: int
) -> Problem | None:
    counts: dict[str, int] = {}
    for a in avps:
        d = dictionary.avps.get((a.code, a.vendor))
        if d is not None and d.name in ignored:
            continue
        if d is None:
            if a.flags & AVP_FLAG_MANDATORY:
                return Problem(AVP_UNSUPPORTED, avpcodec.pad(a.raw), f"AVP {a.code}/{a.vendor} is not supported")
            continue
        element = grammar.element(d.name)
        if element is None and not grammar.allows_any:
            return Problem(AVP_NOT_ALLOWED, avpcodec.pad(a.raw), f"{d.name} is not allowed here")
        if element is not None:
            n = counts.get(d.name, 0) + 1
            counts[d.name] = n
            if n > element.max:
                return Problem(AVP_OCCURS_TOO_MANY_TIMES, avpcodec.pad(a.raw), f"{d.name} occurs too many times")
        problem = check_value(a, d, dictionary, depth_left)
        if problem is not None:
            return problem
    for e in grammar.elements:
        if counts.get(e.name, 0) < e.min:
            d = dictionary.by_name[e.name]
            return Problem(MISSING_AVP, example_avp(d), f"{e.name} is missing")
    return None


def check_value(a: Avp, d: AvpDef, dictionary: Dictionary, depth_left: int = MAX_AVP_DEPTH) -> Problem | None:
    """Check one known AVP's data against its type (and, for Grouped, its grammar, with
    ``depth_left`` more levels of grouping allowed)."""
    data = a.data
    size = _FIXED_SIZE.get(d.type)
    if size is not None and len(data) != size:
        return Problem(INVALID_AVP_LENGTH, avpcodec.pad(a.raw), f"{d.name} must be {size} bytes")
    t = d.type
    if t == "Enumerated" and d.values and a.flags & AVP_FLAG_MANDATORY:
        value = int.from_bytes(data, "big", signed=True)
        if value not in d.values:
            return Problem(INVALID_AVP_VALUE, avpcodec.pad(a.raw), f"{d.name} value {value} is not defined")
    elif t in ("UTF8String", "DiameterIdentity", "DiameterURI"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return Problem(INVALID_AVP_VALUE, avpcodec.pad(a.raw), f"{d.name} is not valid UTF-8")
        if t == "DiameterIdentity" and not data:
            return Problem(INVALID_AVP_VALUE, avpcodec.pad(a.raw), f"{d.name} is empty")
    elif t == "Address":
        family = int.from_bytes(data[:2], "big") if len(data) >= 2 else -1
        want = _ADDRESS_SIZE.get(family)
        if len(data) < 2 or (want is not None and len(data) != 2 + want):
            return Problem(INVALID_AVP_LENGTH, avpcodec.pad(a.raw), f"{d.name} has a bad address length")
    elif t == "Grouped" and d.grammar is not None:
        if depth_left <= 0:
            head = avpcodec.encode(a.code, b"", vendor=a.vendor or None, flags=a.flags)
            return Problem(INVALID_AVP_VALUE, head, f"{d.name} is nested too deeply")
        try:
            children = decode_avps(data)
        except AvpLengthError as exc:
            return Problem(INVALID_AVP_LENGTH, wrap(a, exc.failed), f"inside {d.name}: {exc}")
        inner = _check_avps(children, d.grammar, dictionary, frozenset(), depth_left - 1)
        if inner is not None:
            failed = wrap(a, inner.failed_avp) if inner.failed_avp is not None else None
            # "inside X: inside X: ..." once per level would only repeat itself.
            prefix = f"inside {d.name}: "
            message = inner.message if inner.message.startswith(prefix) else prefix + inner.message
            return Problem(inner.result_code, failed, message)
    return None


def wrap(parent: Avp, child: bytes) -> bytes:
    """Nest an offending inner AVP in (a copy of) its parent's header, as RFC 6733 §7.5 allows."""
    return avpcodec.encode(parent.code, child, vendor=parent.vendor or None, flags=parent.flags)
