"""The GSMA TAC database as operators receive it: pipe-separated, one TAC a row. Pure
(it parses lines it is given).

The header names the columns (the GSMA file's, which DIRBS's importer also reads)::

    TAC|Marketing Name|Internal Model Name|Manufacturer|Bands|Allocation Date|
    Country Code|Fixed Code|Manufacturer Code|Radio Interface|Brand Name|Model Name|
    Operating System|NFC|Bluetooth|WLAN|Device Type

Mandatory per row: TAC (8 digits), Manufacturer, Bands, Allocation Date (``DD-Mon-YYYY``)
and Device Type; the model is the Marketing Name, else the Model Name. Unknown values are
``Not Known``. The radio accesses a model can use are read from Bands and Radio Interface
(GSM, and WCDMA/UMTS/HSPA/TD-SCDMA/CDMA2000, are 2G/3G; LTE is LTE; NR and 5G are 5G).
A row that does not read is refused with its file and line, and nothing is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from .errors import LineError
from .observation import Rat, TacInfo

MANDATORY = ("TAC", "Manufacturer", "Bands", "Allocation Date", "Device Type")
NOT_KNOWN = "not known"
_RAT_WORDS = (
    (re.compile(r"\b(GSM|GPRS|EDGE|WCDMA|UMTS|HSPA\+?|HSDPA|HSUPA|TD-SCDMA|CDMA2000|CDMA|EVDO)\b", re.I),
     Rat.GERAN_UTRAN),
    (re.compile(r"\b(LTE|E-UTRA)\b", re.I), Rat.EUTRAN),
    (re.compile(r"\b(NR|5G)\b", re.I), Rat.NR),
)  # fmt: skip


class TacFileError(LineError):
    pass


@dataclass(frozen=True, slots=True)
class TacEntry:
    info: TacInfo
    manufacturer: str
    allocated: date


def radio_accesses(*texts: str) -> frozenset[Rat]:
    return frozenset(rat for pattern, rat in _RAT_WORDS for text in texts if pattern.search(text))


class TacDatabase:
    """TAC -> what the database says; immutable once read (a reload builds a new one)."""

    def __init__(self, entries: dict[str, TacEntry], source: str) -> None:
        self._entries = entries
        self.source = source

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterable[tuple[str, TacEntry]]:
        return self._entries.items()

    def describe(self, tac: str) -> dict[str, str] | None:
        """What verdict log lines and sighting events say of the device: model, type, maker."""
        e = self._entries.get(tac)
        if e is None:
            return None
        return {"model": e.info.model, "device_type": e.info.device_type, "manufacturer": e.manufacturer}

    def entry(self, tac: str) -> TacEntry | None:
        return self._entries.get(tac)

    def info(self, tac: str) -> TacInfo | None:
        e = self._entries.get(tac)
        return e.info if e is not None else None


def read_tac_file(lines: Iterable[str], source: str) -> TacDatabase:
    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise TacFileError(source, 1, "empty file: expected a header line")
    header = [h.strip() for h in first.rstrip("\r\n").split("|")]
    missing = [m for m in MANDATORY if m not in header]
    if missing:
        raise TacFileError(source, 1, f"the header lacks {', '.join(missing)}")
    col = {name: i for i, name in enumerate(header)}
    entries: dict[str, TacEntry] = {}
    for number, raw in enumerate(it, start=2):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != len(header):
            raise TacFileError(source, number, f"{len(fields)} fields, the header has {len(header)}")

        def get(name: str, fields: list[str] = fields) -> str:
            i = col.get(name)
            value = fields[i] if i is not None else ""
            return "" if value.lower() == NOT_KNOWN else value

        tac = fields[col["TAC"]]
        if not (len(tac) == 8 and tac.isascii() and tac.isdigit()):
            raise TacFileError(source, number, f"TAC: {tac!r} is not 8 digits")
        if tac in entries:
            raise TacFileError(source, number, f"TAC {tac} appears twice")
        for name in ("Manufacturer", "Device Type"):
            if not get(name):
                raise TacFileError(source, number, f"{name} is empty")
        try:
            allocated = datetime.strptime(fields[col["Allocation Date"]], "%d-%b-%Y").date()
        except ValueError:
            raise TacFileError(source, number, f"Allocation Date: {fields[col['Allocation Date']]!r} is not "
                               "DD-Mon-YYYY") from None  # fmt: skip
        model = get("Marketing Name") or get("Model Name") or get("Internal Model Name") or tac
        rats = radio_accesses(get("Bands"), get("Radio Interface"))
        entries[tac] = TacEntry(TacInfo(model, get("Device Type"), rats), get("Manufacturer"), allocated)
    return TacDatabase(entries, source)
