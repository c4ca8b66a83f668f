"""A list snapshot in a file that several worker processes map into memory.

``serve --workers N`` builds the snapshot once in the supervisor and writes it
here; each worker maps the file read-only, so the sorted IMEI arrays (about 10
bytes per IMEI, 1 GB at 100 million) live once in the page cache instead of once
per worker. The Bloom filter is loaded into each worker (rbloom keeps its own
copy: about 1.8 bytes per IMEI at a 0.1 % false-positive rate).

File layout: a magic line, an 8-byte header length, a JSON header (metadata,
small tables, array offsets), then each array's raw bytes 8-byte aligned, then
the filter's bytes.
"""

from __future__ import annotations

import json
import mmap
import operator
import os
import struct
from array import array
from pathlib import Path
from typing import Any, cast

from rbloom import Bloom

from ..decision.model import Entry, ListKind
from .snapshot import ListSnapshot

MAGIC = b"S13EIR-LISTS 1\n"
_LEN = struct.Struct("!Q")
_ARRAYS = ("_keys", "_exc_imei", "_exc_imsi", "_exc_src")


def _entry(e: Entry) -> list[str]:
    return [e.list.value, e.source, e.key, e.detail]


def _unentry(v: list[str]) -> Entry:
    return Entry(ListKind(v[0]), v[1], v[2], v[3])


def save_snapshot(snap: ListSnapshot, path: str | os.PathLike[str]) -> None:
    """Write ``snap`` to ``path`` atomically (a new file renamed over the old one, so a
    worker that maps the old file keeps a consistent view)."""
    arrays: list[array[int]] = [getattr(snap, name) for name in _ARRAYS]
    bloom = snap._bloom.save_bytes()
    header: dict[str, Any] = {
        "metas": [[k.value, s, d] for (k, s, d) in snap._metas],
        "overflow": {str(n): list(v) for n, v in snap._overflow.items()},
        "exc_sources": list(snap._exc_sources),
        "tac": {t: [_entry(e) for e in es] for t, es in snap._tac.items()},
        "ranges": [
            [f, la, _entry(e)]
            for f, la, e in zip(snap._range_first, snap._range_last, snap._range_entries, strict=True)
        ],
        "counts": snap.counts(),
        "arrays": [],
    }
    offset = 0
    for name, a in zip(_ARRAYS, arrays, strict=True):
        size = len(a) * a.itemsize
        header["arrays"].append([name, a.typecode, offset, len(a)])
        offset += (size + 7) & ~7
    header["bloom"] = [offset, len(bloom)]
    head = json.dumps(header).encode()
    tmp = Path(f"{os.fspath(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(MAGIC + _LEN.pack(len(head)) + head)
        f.write(b"\0" * (-f.tell() % 8))
        for a in arrays:
            a.tofile(f)
            f.write(b"\0" * (-(len(a) * a.itemsize) % 8))
        f.write(bloom)
    os.replace(tmp, path)


def load_mapped(path: str | os.PathLike[str]) -> ListSnapshot:
    """Map a file written by :func:`save_snapshot`; the arrays are not copied."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    if mm[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{os.fspath(path)}: not an s13eir list snapshot")
    (n,) = _LEN.unpack_from(mm, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    header = json.loads(mm[start : start + n])
    base = start + n
    base += -base % 8
    view = memoryview(mm)
    arrays: dict[str, Any] = {}
    for name, typecode, offset, length in header["arrays"]:
        size = length * array(typecode).itemsize
        arrays[name] = view[base + offset : base + offset + size].cast(typecode)
    b_off, b_len = header["bloom"]
    bloom = Bloom.load_bytes(bytes(view[base + b_off : base + b_off + b_len]), operator.index)
    ranges = [(f, la, _unentry(e)) for f, la, e in header["ranges"]]
    snap = ListSnapshot(
        # memoryviews of the mapping stand in for the arrays: indexing, len and bisect
        # work the same on both, without copying the file into this process.
        keys=cast("array[int]", arrays["_keys"]),
        metas=tuple((ListKind(k), s, d) for k, s, d in header["metas"]),
        overflow={int(k): tuple(v) for k, v in header["overflow"].items()},
        exc_imei=cast("array[int]", arrays["_exc_imei"]),
        exc_imsi=cast("array[int]", arrays["_exc_imsi"]),
        exc_src=cast("array[int]", arrays["_exc_src"]),
        exc_sources=tuple(header["exc_sources"]),
        tac={t: tuple(_unentry(e) for e in es) for t, es in header["tac"].items()},
        ranges=ranges,
        bloom=bloom,
        counts=header["counts"],
    )
    return snap
