"""DIRBS delta files -> :class:`~s13eir.lists.redis_layout.Change` lists.

DIRBS publishes, next to each full list, one CSV per event type (see the DIRBS
notes in the domain reference, §2.5):

* blacklist: ``<ts>_blacklist_delta_<base>_<run>_{blocked,unblocked,changed}.csv`` with
  the full list's header ``imei,block_date,reasons``;
* exceptions (per operator): ``..._{added,removed}.csv`` with ``imei,imsi[,msisdn]``.

The event comes from the file name's last ``_word`` or from ``kind``. Rows become:

=============  ==================================================================
blocked        add (list, imei, reason=reasons, source=file)
unblocked      remove (list, imei) with an empty source: the entry goes, whatever
               its reasons (DIRBS lifts a block as a whole); ``reason`` keeps the
               row's reasons in the change record, for the audit trail only
changed        remove as for unblocked, then add with the new reasons: the entry
               ends with exactly the new reasons (the writer never splits the pair
               between two atomic slices, so no reader sees the entry missing)
added          add (exceptions, imei, imsi, source=file)
removed        remove (exceptions, imei, imsi)
=============  ==================================================================

The whole file is parsed before anything is returned, so a bad row (a
:class:`~s13eir.lists.formats.ListFormatError` with file and line) means nothing of
that file is applied. Delta files are daily and small (thousands to a few hundred
thousand rows), so they are held as a list; a full list goes through
``lists import``, which streams.
"""

from __future__ import annotations

import os
from typing import Final, Literal, get_args

from s13eir.decision.model import ListKind
from s13eir.lists.formats import ListFormatError, ListSpec, parse_list
from s13eir.lists.redis_layout import Change, ListName

__all__ = ["BLACKLIST_KINDS", "DELTA_KINDS", "EXCEPTION_KINDS", "DeltaKind", "delta_kind", "parse_delta"]

DeltaKind = Literal["blocked", "unblocked", "changed", "added", "removed"]
DELTA_KINDS: Final[tuple[str, ...]] = get_args(DeltaKind)
BLACKLIST_KINDS: Final = ("blocked", "unblocked", "changed")
EXCEPTION_KINDS: Final = ("added", "removed")


def delta_kind(path: str) -> DeltaKind | None:
    """The event named by the file name (``..._blocked.csv`` -> ``blocked``), or None."""
    stem = os.path.basename(path).lower()
    for ext in (".csv", ".txt"):
        stem = stem.removesuffix(ext)
    word = stem.rsplit("_", 1)[-1].rsplit("-", 1)[-1]
    for kind in get_args(DeltaKind):
        if word == kind:
            result: DeltaKind = kind
            return result
    return None


class _Collect:
    """A ListSink that keeps the rows (a delta is small; see the module docstring)."""

    def __init__(self) -> None:
        self.imeis: list[tuple[str, str]] = []  # (imei14, reasons)
        self.pairs: list[tuple[str, str]] = []  # (imei14, imsi)

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.imeis.append((imei14, detail))

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self.pairs.append((imei14, imsi))

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        raise AssertionError("delta formats carry no TAC rules")

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        raise AssertionError("delta formats carry no ranges")


def parse_delta(
    path: str, kind: DeltaKind | None = None, *, list_name: ListName = "black", source: str | None = None
) -> tuple[DeltaKind, list[Change]]:
    """(kind, changes) of one delta file; ListFormatError on any bad row or an unknown kind.

    ``list_name`` is the list a blacklist delta applies to (black, grey or white: a
    DIRBS-format greylist has the same files); ``source`` defaults to the path.
    """
    event = kind or delta_kind(path)
    if event is None:
        raise ListFormatError(
            path,
            0,
            f"cannot tell the delta kind from the file name (expected _{'/_'.join(DELTA_KINDS)}.csv); give --kind",
        )
    src = path if source is None else source
    sink = _Collect()
    if event in BLACKLIST_KINDS:
        if list_name == "exceptions":
            raise ListFormatError(path, 0, f"a {event} delta applies to black, grey or white, not exceptions")
        parse_list(ListSpec(path, "dirbs-blacklist", ListKind(list_name)), sink)
        changes: list[Change] = []
        for imei, reasons in sink.imeis:
            if event == "blocked":
                changes.append(Change("add", list_name, imei, reason=reasons, source=src))
            elif event == "unblocked":
                changes.append(Change("remove", list_name, imei, reason=reasons))
            else:
                changes.append(Change("remove", list_name, imei))
                changes.append(Change("add", list_name, imei, reason=reasons, source=src))
        return event, changes
    parse_list(ListSpec(path, "dirbs-exceptions"), sink)
    op: Literal["add", "remove"] = "add" if event == "added" else "remove"
    return event, [Change(op, "exceptions", imei, imsi, source=src) for imei, imsi in sink.pairs]
