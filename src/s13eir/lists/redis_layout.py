"""How the lists are laid out in Redis: key names, value encodings, change records.

This module is the contract between the writer (``s13eir lists import``,
``apply-delta``, ``s13eir sync``) and the readers (every EIR node). Pure: no I/O.

Each list (black, grey, white, exceptions, and ``rules`` for TAC and range rules)
has its own generations, so importing one list's snapshot neither copies nor
touches the others. ``P`` is the configured key prefix (default ``s13eir``), ``g`` a
generation number (unique across lists, from ``INCR P:nextgen``).

``P:current`` (hash)
    list -> the generation readers use. One ``HSET`` makes a new generation current
    once it is complete and verified, so readers never see a half-loaded list.
``P:previous`` (hash)
    list -> the generation before it, kept for an instant rollback.
``P:nextgen`` (string)
    Generation counter.
``P:g:{g}:info`` (hash)
    ``list``, ``state`` (loading | ready), ``count`` (entries), ``checksum`` (see
    :func:`entry_checksum`), ``source``, ``created`` (epoch seconds), ``seq`` (the
    change-log sequence number the generation was made current at), ``epoch`` (the
    store's ``P:epoch`` when it was made current).
``P:g:{g}:m`` (hash)
    Entry metadata: id -> ``"<list>\t<source>\t<detail>"``. Ids are small integers
    shared by every entry with the same list, source and reason.
``P:g:{g}:e:{imei // 100000}`` (hash; black, grey, white)
    Single IMEIs, bucketed by TAC and the first serial digit so that a bucket holds
    a few hundred entries at most and Redis keeps it in its compact listpack
    encoding. Field: ``imei % 100000`` (decimal); value: meta ids, comma-separated.
``P:g:{g}:x:{imei // 100000}`` (hash; exceptions)
    Exception pairs. Field: ``"<imei % 100000>:<imsi>"``; value: the meta id of the
    pair's source.
``P:g:{g}:tac`` and ``P:g:{g}:ranges`` (hashes; rules)
    TAC rules (tac -> meta ids) and IMEI ranges (``"<first14>-<last14>"`` -> meta
    ids). Small; every node keeps a copy in memory.
``P:g:{g}:bloom`` (string; black, grey, white, exceptions)
    The writer's rbloom filter over the generation's IMEIs (``lists.bloom`` format),
    so a node starts in milliseconds instead of scanning. Nodes add the IMEIs of
    later changes to their own copy.
``P:changes`` (stream)
    Every applied change, in order, with a monotonically increasing ``seq`` field
    (also the stream id ``<seq>-0``), so that a node catches up from where it was;
    a ``generation`` record when a list's generation changes (import or rollback).
``P:seq`` (string)
    The last sequence number written to the stream.
``P:epoch`` (string)
    The store's identity, written (``SET NX``) when the first generation becomes
    current, and copied into each generation's ``info.epoch``. Together with ``P:seq``
    it lets a node tell a store that moved on from one that went back: a Redis that
    restarted empty, restored an old dump or failed over to a replica that lost writes
    has a new (or no) epoch, or a lower seq. A node that sees that keeps its lists and
    answers as if Redis were away until a valid store is back (``redis_store``).
``P:feed:{name}`` (hash)
    Per master-list feed (e.g. an MQTT topic): ``seq`` of the last change set
    applied from it, for exactly-once application.
``P:sync:snapshots`` (hash)
    list -> JSON ``{"path", "sha256", "generation", "imported"}`` of the snapshot file
    ``s13eir sync`` last imported for it, so an unchanged file is not imported again.
``P:lock:writer`` (string)
    The writer lock (``SET NX PX``, renewed), so exactly one sync process writes.

Redis Cluster: generation keys spread over the cluster by bucket. The pointer
flip is one key and atomic anywhere. A change is applied by one Lua script per
bucket key together with its stream record only where they share a slot, so
the writer logs first (``XADD``) and applies second; a writer that dies between
the two re-applies the stream's tail on start (changes are idempotent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

BUCKET: Final = 100_000
DEFAULT_PREFIX: Final = "s13eir"

ListName = Literal["black", "grey", "white", "exceptions"]
LISTS: Final[tuple[ListName, ...]] = ("black", "grey", "white", "exceptions")
RULES: Final = "rules"  # the pseudo-list holding TAC and range rules
ALL_LISTS: Final[tuple[str, ...]] = (*LISTS, RULES)
Op = Literal["add", "remove"]


def k_current(p: str) -> str:
    return f"{p}:current"


def k_previous(p: str) -> str:
    return f"{p}:previous"


def k_nextgen(p: str) -> str:
    return f"{p}:nextgen"


def k_info(p: str, g: int) -> str:
    return f"{p}:g:{g}:info"


def k_meta(p: str, g: int) -> str:
    return f"{p}:g:{g}:m"


def k_imei_bucket(p: str, g: int, imei: int) -> str:
    return f"{p}:g:{g}:e:{imei // BUCKET}"


def k_exception_bucket(p: str, g: int, imei: int) -> str:
    return f"{p}:g:{g}:x:{imei // BUCKET}"


def k_tac(p: str, g: int) -> str:
    return f"{p}:g:{g}:tac"


def k_ranges(p: str, g: int) -> str:
    return f"{p}:g:{g}:ranges"


def k_bloom(p: str, g: int) -> str:
    return f"{p}:g:{g}:bloom"


def k_generation_pattern(p: str, g: int) -> str:
    """SCAN pattern for every key of generation ``g`` (for deletion of old generations)."""
    return f"{p}:g:{g}:*"


def k_changes(p: str) -> str:
    return f"{p}:changes"


def k_seq(p: str) -> str:
    return f"{p}:seq"


def k_epoch(p: str) -> str:
    return f"{p}:epoch"


def k_feed(p: str, name: str) -> str:
    return f"{p}:feed:{name}"


def k_lock(p: str) -> str:
    return f"{p}:lock:writer"


def imei_field(imei: int) -> str:
    return str(imei % BUCKET)


def exception_field(imei: int, imsi: str) -> str:
    return f"{imei % BUCKET}:{imsi}"


def encode_meta(list_name: str, source: str, detail: str) -> str:
    # Tabs and newlines cannot appear in list or source; a detail's are flattened.
    return f"{list_name}\t{source}\t{detail.replace(chr(9), ' ').replace(chr(10), ' ')}"


def decode_meta(value: str) -> tuple[str, str, str]:
    list_name, source, detail = value.split("\t", 2)
    return list_name, source, detail


def encode_ids(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(set(ids)))


def decode_ids(value: str | bytes) -> list[int]:
    text = value.decode() if isinstance(value, bytes) else value
    return [int(x) for x in text.split(",") if x]


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one list. ``imsi`` only for the exceptions list."""

    op: Op
    list: ListName
    imei: str  # 14-digit key
    imsi: str = ""
    reason: str = ""
    source: str = ""


def change_fields(seq: int, generation: int, change: Change) -> dict[str, str]:
    """The stream record of an applied change."""
    return {
        "seq": str(seq),
        "gen": str(generation),
        "op": change.op,
        "list": change.list,
        "imei": change.imei,
        "imsi": change.imsi,
        "reason": change.reason,
        "source": change.source,
    }


def generation_record(seq: int, generation: int, list_name: str) -> dict[str, str]:
    """The stream record written when a list's generation becomes current (nodes reload it)."""
    return {"seq": str(seq), "gen": str(generation), "op": "generation", "list": list_name, "imei": "",
            "imsi": "", "reason": "", "source": ""}  # fmt: skip


def parse_change(fields: Mapping[str, str]) -> tuple[int, int, Change | str]:
    """(seq, generation, change), or (seq, generation, list name) for a generation record."""
    seq, gen, op = int(fields["seq"]), int(fields["gen"]), fields["op"]
    if op == "generation":
        if fields["list"] not in ALL_LISTS:
            raise ValueError(f"bad generation record {dict(fields)!r}")
        return seq, gen, fields["list"]
    if op not in ("add", "remove") or fields["list"] not in LISTS:
        raise ValueError(f"bad change record {dict(fields)!r}")
    change = Change(op, fields["list"], fields["imei"], fields.get("imsi", ""),  # type: ignore[arg-type]
                    fields.get("reason", ""), fields.get("source", ""))  # fmt: skip
    return seq, gen, change


def entry_checksum(lines: Iterable[str]) -> str:
    """Order-independent checksum of a generation's entries: the XOR of the SHA-256 of
    each canonical entry line (``list,imei[,imsi]``), so writer and verifier can compute
    it in any order, streaming."""
    acc = 0
    for line in lines:
        acc ^= int.from_bytes(hashlib.sha256(line.encode()).digest()[:16], "big")
    return f"{acc:032x}"


def entry_line(list_name: str, imei: str, imsi: str = "") -> str:
    return f"{list_name},{imei},{imsi}" if imsi else f"{list_name},{imei}"
