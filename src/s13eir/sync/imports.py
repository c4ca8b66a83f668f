"""Streaming a list file into a new generation for the writer (reading generations
back, comparing and deleting them: ``generation_scan``).

Everything here streams: a file is parsed row by row in a worker thread (the
parsers of :mod:`s13eir.lists.formats` are synchronous) and handed to the event
loop in batches of ``batch_size`` rows through a bounded hand-off, so memory stays
constant whatever the file size (the parser blocks while the writer is two batches
behind). Only three things grow with the data: the Bloom filter (18 MB for 10 M
IMEIs at 0.1 %), the meta-id table (one entry per distinct list, source and reason:
a few dozen for a DIRBS export, one per row only for a pathological file with a
unique reason per row), and nothing else. Redis is read back with SCAN and HKEYS
in batches, never with one call for a whole generation.

Two write paths, chosen by the writer:

* ``atomic`` (single server, Sentinel): one Lua script per batch receives the
  batch's bucket keys and its rows as one string, sets each field if new and
  otherwise merges the id into the field's comma-separated ids, and answers per row
  whether the entry or the (entry, id) pair was new. One command per 2,000 rows
  instead of one per row: redis-py's per-command cost (~19 µs pipelined, measured)
  would otherwise dominate a 10 M-row import.
* not atomic (Cluster: the rows of a batch live in many slots, which one script
  cannot touch): a pipeline of HSETNX, then a read-merge-write of the fields that
  existed. Safe because the generation being loaded has exactly one writer (the
  holder of the writer lock) and no reader until it is made current.

Checksums: ``checksum`` is the contract's :func:`~s13eir.lists.redis_layout.entry_checksum`
(XOR of SHA-256 of ``list,imei[,imsi]`` per entry). ``digest`` is the XOR over every
(entry, meta) pair of the entry's checksum share times an odd factor derived from the
meta's list and detail (mod 2**128), so it changes when a reason or (for rules) a
TAC's list changes, which ``checksum`` cannot see; it leaves out the source (the file
path) so that the same content imported from another path is recognised as unchanged.
The rules pseudo-list has no IMEI entries; its lines are ``rules,tac:<tac>`` and
``rules,range:<first14>-<last14>`` (see :func:`rule_tac_line`).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from redis.commands.core import AsyncScript

from s13eir.backends.redis_client import AnyRedis
from s13eir.backends.redis_scripts import lua
from s13eir.decision.model import ListKind
from s13eir.lists import formats
from s13eir.lists.bloom import Bloom, new_bloom
from s13eir.lists.formats import ListFormatError, ListSpec, parse_list
from s13eir.lists.redis_layout import (
    BUCKET,
    RULES,
    decode_meta,
    encode_meta,
    entry_line,
    k_meta,
    k_ranges,
    k_tac,
)

__all__ = [
    "DEFAULT_BATCH",
    "EMPTY_CHECKSUM",
    "LoadResult",
    "MetaIds",
    "count_lines",
    "glob_escape",
    "h128",
    "hex128",
    "load_generation",
    "raise_if_cancelled",
    "read_meta",
    "rule_range_line",
    "rule_tac_line",
]

DEFAULT_BATCH: Final = 2000
EMPTY_CHECKSUM: Final = "0" * 32
_HANDOFF_DEPTH: Final = 2  # batches parsed ahead of the writer


_sha256 = hashlib.sha256


def h128(line: str) -> int:
    """One line's share of :func:`~s13eir.lists.redis_layout.entry_checksum`."""
    return int.from_bytes(hashlib.sha256(line.encode()).digest()[:16], "big")


def hex128(value: int) -> str:
    return f"{value:032x}"


def rule_tac_line(tac8: str) -> str:
    return entry_line(RULES, f"tac:{tac8}")


def rule_range_line(field_value: str) -> str:
    return entry_line(RULES, f"range:{field_value}")


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop.

    redis-py 8.1's asyncio client sometimes lets a command finish normally although
    its task was cancelled mid-command (measured: 13 of 200 cancels landing inside
    an EVALSHA were lost), so an interrupted import could run on to the switch. The
    task's own count of cancel requests still shows it: checked between batches.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN MATCH pattern (the prefix is configurable)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# --- meta ids --------------------------------------------------------------------------


class MetaIds:
    """A generation's meta table (``P:g:{g}:m``): id <-> ``list\\tsource\\tdetail``.

    Ids are allocated here, by the only writer, as max + 1; ``pending`` holds the ones
    not yet written to Redis.
    """

    def __init__(self, by_id: dict[int, str] | None = None) -> None:
        self.by_id: dict[int, str] = dict(by_id or {})
        self.by_text: dict[str, int] = {text: mid for mid, text in self.by_id.items()}
        self.next_id = max(self.by_id, default=0) + 1
        self.pending: list[tuple[int, str]] = []

    def id_for(self, list_name: str, source: str, detail: str) -> int:
        text = encode_meta(list_name, source, detail)
        mid = self.by_text.get(text)
        if mid is None:
            mid = self.next_id
            self.next_id += 1
            self.by_text[text] = mid
            self.by_id[mid] = text
            self.pending.append((mid, text))
        return mid

    def take_pending(self) -> dict[str, str]:
        out = {str(mid): text for mid, text in self.pending}
        self.pending.clear()
        return out

    def matching(self, list_name: str, source: str, detail: str) -> list[int]:
        """Ids whose meta has this list and source, and this detail unless it is empty."""
        out = []
        for mid, text in self.by_id.items():
            m_list, m_source, m_detail = decode_meta(text)
            if m_list == list_name and m_source == source and (not detail or m_detail == detail):
                out.append(mid)
        return out


async def read_meta(r: AnyRedis, p: str, g: int) -> MetaIds:
    raw = await r.hgetall(k_meta(p, g))
    return MetaIds({int(k): v.decode() if isinstance(v, bytes) else v for k, v in raw.items()})


# --- parsing in a thread, writing in the loop -------------------------------------------


@dataclass(slots=True)
class _Batch:
    """Rows ready for writing: row i goes to ``keys[rows[i]]``, field ``fields[i]``, meta
    id ``mids[i]``; ``shares[i]``/``pairs[i]`` are its shares of checksum and digest."""

    keys: list[str]  # distinct, in order of first use: sorted files name few per batch
    rows: list[int]
    fields: list[str]
    mids: list[str]
    shares: list[int]
    pairs: list[int]
    metas: dict[str, str]
    read: int  # rows read from the file so far

    def payload(self) -> str:
        return "".join(f"{k},{f},{m};" for k, f, m in zip(self.rows, self.fields, self.mids, strict=True))


@dataclass(slots=True)
class _Done:
    read: int


class _Aborted(Exception):
    """The writer gave up; the parser thread stops at its next hand-off."""


class _WrongList(Exception):
    def __init__(self, ordinal: int, got: str) -> None:
        super().__init__(ordinal, got)
        self.ordinal = ordinal  # 1-based data row
        self.got = got


class _Handoff:
    """Thread -> event loop queue that blocks the parser while ``depth`` batches wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = _HANDOFF_DEPTH) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._slots = threading.Semaphore(depth)
        self.aborted = threading.Event()

    def put(self, item: object) -> None:  # parser thread
        # A timed wait so that an abandoned import ends its thread within 0.2 s.
        while not self._slots.acquire(timeout=0.2):
            if self.aborted.is_set():
                raise _Aborted
        if self.aborted.is_set():
            raise _Aborted
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def finish(self, item: object) -> None:  # parser thread: the last item never waits
        if not self.aborted.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def get(self) -> object:
        item = await self._queue.get()
        if isinstance(item, _Batch):
            self._slots.release()
        return item


_MASK128: Final = (1 << 128) - 1


def meta_factor(list_name: str, detail: str) -> int:
    """The odd 128-bit multiplier of a meta's (list, detail) in the digest: a pair's share
    is its entry's checksum share times this, mod 2**128 (one multiplication instead of
    a second SHA-256 per row; the digest detects changes, it is no security checksum)."""
    return h128(f"meta\t{list_name}\t{detail}") | 1


class _RowSink:
    """A :class:`~s13eir.lists.formats.ListSink` turning rows into bucket writes for
    one list, in the parser thread. Hot path: called once per row (~3 µs of Python
    per row besides the parser's own; see bench/redis_lists.py)."""

    def __init__(
        self,
        p: str,
        g: int,
        list_name: str,
        metas: MetaIds,
        bloom: Bloom | None,
        batch_size: int,
        put: Callable[[object], None],
    ) -> None:
        self.list = list_name
        self.kind = ListKind(list_name) if list_name in ("black", "grey", "white") else None
        self.metas = metas
        self.bloom = bloom
        self.batch_size = batch_size
        self.put = put
        self.read = 0
        self._new()
        self._mids: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._e = f"{p}:g:{g}:e:"
        self._x = f"{p}:g:{g}:x:"
        self._line = f"{list_name},"
        self._tac = k_tac(p, g)
        self._ranges = k_ranges(p, g)

    def _new(self) -> None:
        self.keys: dict[str, int] = {}  # key -> 1-based index (Lua's KEYS)
        self.rows: list[int] = []
        self.fields: list[str] = []
        self.mids: list[str] = []
        self.shares: list[int] = []
        self.pairs: list[int] = []
        self.ints: list[int] = []

    def _mid(self, list_name: str, source: str, detail: str) -> tuple[str, int]:
        key = (list_name, source, detail)
        found = self._mids.get(key)
        if found is None:
            mid = str(self.metas.id_for(list_name, source, detail))
            found = self._mids[key] = (mid, meta_factor(list_name, detail))
        return found

    def _unexpected(self, what: str) -> None:
        # Unreachable once the writer has matched the format to the list; kept so that
        # a new format cannot silently load rows of the wrong kind.
        raise ListFormatError("", 0, f"a {what} row cannot go on the {self.list!r} list")

    def _row(self, key: str, fld: str, mid: str, line: str, factor: int) -> None:
        share = int.from_bytes(_sha256(line.encode()).digest()[:16], "big")
        ki = self.keys.get(key)
        if ki is None:
            ki = self.keys[key] = len(self.keys) + 1
        self.rows.append(ki)
        self.fields.append(fld)
        self.mids.append(mid)
        self.shares.append(share)
        self.pairs.append((share * factor) & _MASK128)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if kind is not self.kind:
            if self.kind is None:
                self._unexpected("single-IMEI")
            raise _WrongList(self.read, kind.value)
        mid, factor = self._mid(self.list, source, detail)
        n = int(imei14)
        self.ints.append(n)
        self._row(f"{self._e}{n // BUCKET}", str(n % BUCKET), mid, self._line + imei14, factor)

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self.read += 1
        if self.list != "exceptions":
            self._unexpected("exception pair")
        mid, factor = self._mid("exceptions", source, "")
        n = int(imei14)
        self.ints.append(n)
        self._row(
            f"{self._x}{n // BUCKET}", f"{n % BUCKET}:{imsi}", mid, entry_line("exceptions", imei14, imsi), factor
        )

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if self.list != RULES:
            self._unexpected("TAC")
        mid, factor = self._mid(kind.value, source, detail)
        self._row(self._tac, tac8, mid, rule_tac_line(tac8), factor)

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if self.list != RULES:
            self._unexpected("IMEI range")
        mid, factor = self._mid(kind.value, source, detail)
        value = f"{first14}-{last14}"
        self._row(self._ranges, value, mid, rule_range_line(value), factor)

    def flush(self) -> None:
        if self.bloom is not None and self.ints:
            self.bloom.update(self.ints)
        if self.rows or self.metas.pending:
            batch = _Batch(list(self.keys), self.rows, self.fields, self.mids, self.shares, self.pairs,
                           self.metas.take_pending(), self.read)  # fmt: skip
            self._new()
            self.put(batch)
        else:
            self.ints = []


def _csv_data_line(path: str, ordinal: int) -> int:
    """The file line of the ``ordinal``-th data row of a ``csv``-format file.

    Only on the error path: the sink is told rows, not lines, so the file is read
    again with the parser's own row reader (same header, comment and blank-line rules).
    """
    for i, (line, _row) in enumerate(formats._csv_rows(path, ("imei", "list", "reason"), False), 1):
        if i == ordinal:
            return line
    return 0


def count_lines(path: str) -> int:
    """Lines in ``path`` (a quick binary pass at disk speed): an upper bound of its rows,
    used to size the Bloom filter before the rows are read, and as a progress total."""
    n = 0
    last = b"\n"
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise ListFormatError(path, 0, f"cannot read: {exc.strerror or exc}") from exc
    return n + (last != b"\n")


def merge_ids(old: bytes | str, mid: str) -> str | None:
    """``old`` with ``mid`` added (sorted, as :func:`encode_ids`), or None if already there."""
    text = old.decode() if isinstance(old, bytes) else old
    ids = [int(x) for x in text.split(",") if x]
    m = int(mid)
    if m in ids:
        return None
    ids.append(m)
    return ",".join(str(i) for i in sorted(ids))


@dataclass(slots=True)
class LoadResult:
    rows: int = 0  # rows read from the file
    count: int = 0  # distinct entries written
    checksum: int = 0
    digest: int = 0
    duplicates: int = 0  # rows naming an entry already written (ids merged)
    bloom: Bloom | None = None
    metas: MetaIds = field(default_factory=MetaIds)


async def load_generation(
    r: AnyRedis,
    p: str,
    g: int,
    spec: ListSpec,
    list_name: str,
    *,
    atomic: bool,
    bloom_fp_rate: float,
    expected_rows: int,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> LoadResult:
    """Stream ``spec`` into generation ``g`` (which must be empty and private to the caller).

    ``check`` runs before each batch (the writer raises there once its lock is lost);
    ``progress`` gets the rows read so far after each batch is written.
    """
    loop = asyncio.get_running_loop()
    handoff = _Handoff(loop)
    res = LoadResult()
    res.bloom = new_bloom(expected_rows, bloom_fp_rate) if list_name != RULES else None
    mode = "single" if list_name == "exceptions" else "ids"
    sink = _RowSink(p, g, list_name, res.metas, res.bloom, batch_size, handoff.put)
    script = r.register_script(lua("import")) if atomic else None

    def produce() -> None:
        try:
            parse_list(spec, sink)
            sink.flush()
        except _Aborted:
            return
        except _WrongList as exc:
            line = _csv_data_line(spec.path, exc.ordinal) if spec.format == "csv" else 0
            handoff.finish(
                ListFormatError(spec.path, line, f"list {exc.got!r}: this file is imported as {list_name!r}")
            )
            return
        except BaseException as exc:  # delivered to the writer, which re-raises it
            handoff.finish(exc)
            return
        handoff.finish(_Done(sink.read))

    producer = asyncio.ensure_future(asyncio.to_thread(produce))
    # Standalone: the next batch's script is sent before the previous one's reply is
    # handled, so Redis is never idle while this thread waits for the GIL held by the
    # parser (measured: ~20 % of a 10 M import). The order of two scripts does not
    # matter: each is atomic, and which of two rows of one entry comes "first" changes
    # neither the count, nor the XOR checksum, nor the digest.
    inflight: tuple[asyncio.Task[None], int] | None = None

    async def settle() -> None:
        nonlocal inflight
        if inflight is not None:
            task, read = inflight
            inflight = None
            await task
            res.rows = read
            if progress is not None:
                progress(read)

    try:
        while True:
            item = await handoff.get()
            if isinstance(item, _Done):
                await settle()
                raise_if_cancelled()
                res.rows = item.read
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Batch)
            raise_if_cancelled()
            if check is not None:
                check()
            if item.metas:
                metas: dict[Any, Any] = item.metas
                await r.hset(k_meta(p, g), mapping=metas)
            if script is not None:
                task = asyncio.ensure_future(_write_atomic(script, item, mode, res))
                await settle()
                inflight = (task, item.read)
                continue
            # Cluster: one batch at a time (its duplicate rows are merged client-side).
            await _write_pipelined(r, item, mode, res)
            res.rows = item.read
            if progress is not None:
                progress(item.read)
    finally:
        handoff.aborted.set()
        waits: set[asyncio.Future[Any]] = {producer}
        if inflight is not None:
            inflight[0].cancel()
            waits.add(inflight[0])
        # asyncio.wait: their own errors stay in them (the first one is already raised),
        # while a cancellation of this task still propagates.
        await asyncio.wait(waits)
    return res


async def _write_atomic(script: AsyncScript, batch: _Batch, mode: str, res: LoadResult) -> None:
    if not batch.rows:
        return
    flags: bytes = await script(keys=batch.keys, args=[mode, batch.payload()])
    count, checksum, digest = 0, 0, 0
    for flag, share, pair in zip(flags, batch.shares, batch.pairs, strict=True):
        if flag == 49:  # b"1"
            count += 1
            checksum ^= share
            digest ^= pair
        elif flag == 50:  # b"2"
            digest ^= pair
    res.count += count
    res.checksum ^= checksum
    res.digest ^= digest
    res.duplicates += len(flags) - count


async def _write_pipelined(r: AnyRedis, batch: _Batch, mode: str, res: LoadResult) -> None:
    if not batch.rows:
        return
    keys = [batch.keys[k - 1] for k in batch.rows]
    pipe = r.pipeline(transaction=False)
    for key, fld, mid in zip(keys, batch.fields, batch.mids, strict=True):
        pipe.hsetnx(key, fld, mid)
    flags: list[int] = await pipe.execute()
    dups: list[int] = []
    for i, flag in enumerate(flags):
        if flag:
            res.count += 1
            res.checksum ^= batch.shares[i]
            res.digest ^= batch.pairs[i]
        else:
            res.duplicates += 1
            dups.append(i)
    if not dups or mode == "single":
        return
    pipe = r.pipeline(transaction=False)
    for i in dups:
        pipe.hget(keys[i], batch.fields[i])
    olds: list[bytes] = await pipe.execute()
    # A field may repeat among the duplicates: merge into the value written just before.
    overlay: dict[tuple[str, str], str] = {}
    for i, old in zip(dups, olds, strict=True):
        where = (keys[i], batch.fields[i])
        merged = merge_ids(overlay.get(where, old), batch.mids[i])
        if merged is not None:
            overlay[where] = merged
            res.digest ^= batch.pairs[i]
    if overlay:
        pipe = r.pipeline(transaction=False)
        for (key, fld), value in overlay.items():
            pipe.hset(key, fld, value)
        await pipe.execute()
