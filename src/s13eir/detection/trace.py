"""Traces of checks, to tune and prove the detection rules: CSV with the header
``t,imei,imsi,peer[,sv]``. Pure (it reads lines it is given).

``t`` is seconds from the start of the trace, in time order; ``imei`` 14 digits, 15 (the
15th a check digit, or the spare digit 0) or 16 (an IMEISV: the last two digits are the
software version); ``imsi`` 5 to 15 digits, or empty; ``peer`` a configured peer's
Origin-Host, which gives the radio access (``interface``) and the location. A row that
does not read is refused with its file and line: a trace is evidence, not best effort.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping

from .errors import LineError
from .observation import Observation, PeerSite

HEADERS = (("t", "imei", "imsi", "peer"), ("t", "imei", "imsi", "peer", "sv"))


class TraceError(LineError):
    pass


def read_trace(lines: Iterable[str], source: str, peers: Mapping[str, PeerSite]) -> Iterator[Observation]:
    """The observations of a trace; ``peers`` by Origin-Host in lower case (Diameter
    identities compare without regard to case), as ``PeersConfig.sites`` gives them."""
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) not in HEADERS:
        raise TraceError(source, 1, f"expected the header {','.join(HEADERS[0])}[,sv], got {header}")
    last = 0.0
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise TraceError(source, number, f"{len(row)} fields, the header has {len(header)}")
        t_text, imei, imsi, peer = (f.strip() for f in row[:4])
        peer = peer.lower()
        sv = row[4].strip() or None if len(row) == 5 else None
        try:
            t = float(t_text)
        except ValueError:
            raise TraceError(source, number, f"t: {t_text!r} is not a number of seconds") from None
        if not t >= 0:  # also NaN
            raise TraceError(source, number, f"t: {t_text!r} is negative")
        if t < last:
            raise TraceError(source, number, f"t: {t:g} comes before the previous row's {last:g}")
        last = t
        if not (imei.isascii() and imei.isdigit() and 14 <= len(imei) <= 16):
            raise TraceError(source, number, f"imei: {imei!r} is not 14, 15 or 16 digits")
        if len(imei) == 16:
            if sv is not None and sv != imei[14:]:
                raise TraceError(source, number, f"sv: {sv!r} differs from the IMEISV's {imei[14:]!r}")
            sv = imei[14:]
        if sv is not None and not (len(sv) == 2 and sv.isascii() and sv.isdigit()):
            raise TraceError(source, number, f"sv: {sv!r} is not 2 digits")
        if imsi and not (imsi.isascii() and imsi.isdigit() and 5 <= len(imsi) <= 15):
            raise TraceError(source, number, f"imsi: {imsi!r} is not 5 to 15 digits")
        where = peers.get(peer)
        if where is None:
            raise TraceError(source, number, f"peer: {peer!r} is not a configured peer's Origin-Host")
        yield Observation(t, imei[:14], imsi or None, peer, where.rat, sv, imei if len(imei) == 15 else None)
