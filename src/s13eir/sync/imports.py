"""Generation-level data work for the writer: stream a list file into a new
generation, re-read a generation to verify it, compare two generations, delete them.

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

* ``atomic`` (single server, Sentinel): one Lua script per batch receives every
  row's bucket key, field and meta id, sets the field if new and otherwise merges
  the id into the field's comma-separated ids, and answers per row whether the
  entry or the (entry, id) pair was new. One command per 2,000 rows instead of one
  per row: redis-py's per-command cost (~19 µs pipelined, measured) would otherwise
  dominate a 10 M-row import.
* not atomic (Cluster: the rows of a batch live in many slots, which one script
  cannot touch): a pipeline of HSETNX, then a read-merge-write of the fields that
  existed. Safe because the generation being loaded has exactly one writer (the
  holder of the writer lock) and no reader until it is made current.

Checksums: ``checksum`` is the contract's :func:`~s13eir.lists.redis_layout.entry_checksum`
(XOR of SHA-256 of ``list,imei[,imsi]`` per entry). ``digest`` is the same XOR over
every (entry, meta) pair as ``line<TAB>list<TAB>detail``, so it changes when a
reason or (for rules) a TAC's list changes, which ``checksum`` cannot see; it leaves
out the source (the file path) so that the same content imported from another path
is recognised as unchanged. The rules pseudo-list has no IMEI entries; its lines are
``rules,tac:<tac>`` and ``rules,range:<first14>-<last14>`` (see :func:`rule_tac_line`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.commands.core import AsyncScript

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
from s13eir.sync.redis_client import AnyRedis

__all__ = [
    "DEFAULT_BATCH",
    "EMPTY_CHECKSUM",
    "LoadResult",
    "MetaIds",
    "compare_generations",
    "count_lines",
    "delete_generations",
    "glob_escape",
    "h128",
    "hex128",
    "load_generation",
    "read_meta",
    "rebuild_bloom",
    "rule_range_line",
    "rule_tac_line",
    "scan_generation",
    "scan_keys",
]

DEFAULT_BATCH: Final = 2000
EMPTY_CHECKSUM: Final = "0" * 32
_SCAN_COUNT: Final = 1000
_KEYS_PER_CALL: Final = 256  # buckets per HKEYS pipeline or compare script call
_HANDOFF_DEPTH: Final = 2  # batches parsed ahead of the writer


def h128(line: str) -> int:
    """One line's share of :func:`~s13eir.lists.redis_layout.entry_checksum`."""
    return int.from_bytes(hashlib.sha256(line.encode()).digest()[:16], "big")


def hex128(value: int) -> str:
    return f"{value:032x}"


def rule_tac_line(tac8: str) -> str:
    return entry_line(RULES, f"tac:{tac8}")


def rule_range_line(field_value: str) -> str:
    return entry_line(RULES, f"range:{field_value}")


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

# (bucket key, field, meta id, checksum share, digest share)
_Row = tuple[str, str, str, int, int]


@dataclass(slots=True)
class _Batch:
    rows: list[_Row]
    metas: dict[str, str]
    read: int  # rows read from the file so far


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


class _RowSink:
    """A :class:`~s13eir.lists.formats.ListSink` turning rows into bucket writes for
    one list, in the parser thread. Hot path: called once per row."""

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
        self.rows: list[_Row] = []
        self.ints: list[int] = []
        self._mids: dict[tuple[str, str, str], str] = {}
        self._e = f"{p}:g:{g}:e:"
        self._x = f"{p}:g:{g}:x:"
        self._tac = k_tac(p, g)
        self._ranges = k_ranges(p, g)

    def _mid(self, list_name: str, source: str, detail: str) -> str:
        key = (list_name, source, detail)
        mid = self._mids.get(key)
        if mid is None:
            mid = self._mids[key] = str(self.metas.id_for(list_name, source, detail))
        return mid

    def _unexpected(self, what: str) -> None:
        # Unreachable once the writer has matched the format to the list; kept so that
        # a new format cannot silently load rows of the wrong kind.
        raise ListFormatError("", 0, f"a {what} row cannot go on the {self.list!r} list")

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if kind is not self.kind:
            if self.kind is None:
                self._unexpected("single-IMEI")
            raise _WrongList(self.read, kind.value)
        n = int(imei14)
        line = f"{self.list},{imei14}"
        self.rows.append(
            (
                f"{self._e}{n // BUCKET}",
                str(n % BUCKET),
                self._mid(self.list, source, detail),
                h128(line),
                h128(f"{line}\t{self.list}\t{detail}"),
            )
        )
        self.ints.append(n)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self.read += 1
        if self.list != "exceptions":
            self._unexpected("exception pair")
        n = int(imei14)
        line = entry_line("exceptions", imei14, imsi)
        self.rows.append(
            (
                f"{self._x}{n // BUCKET}",
                f"{n % BUCKET}:{imsi}",
                self._mid("exceptions", source, ""),
                h128(line),
                h128(f"{line}\texceptions\t"),
            )
        )
        self.ints.append(n)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if self.list != RULES:
            self._unexpected("TAC")
        line = rule_tac_line(tac8)
        mid = self._mid(kind.value, source, detail)
        self.rows.append((self._tac, tac8, mid, h128(line), h128(f"{line}\t{kind.value}\t{detail}")))
        if len(self.rows) >= self.batch_size:
            self.flush()

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.read += 1
        if self.list != RULES:
            self._unexpected("IMEI range")
        value = f"{first14}-{last14}"
        line = rule_range_line(value)
        mid = self._mid(kind.value, source, detail)
        self.rows.append((self._ranges, value, mid, h128(line), h128(f"{line}\t{kind.value}\t{detail}")))
        if len(self.rows) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.bloom is not None and self.ints:
            self.bloom.update(self.ints)
        self.ints = []
        if self.rows or self.metas.pending:
            rows, self.rows = self.rows, []
            self.put(_Batch(rows, self.metas.take_pending(), self.read))


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


# Standalone write path, one call per batch. KEYS[i]: row i's hash; ARGV[1]: 'ids' to
# merge meta ids into an existing field, 'single' to keep the first (exception pairs
# carry one id); ARGV[2i], ARGV[2i+1]: row i's field and meta id.
# Returns per row: 1 new field, 2 existing field that gained the id, 0 nothing new.
_IMPORT_LUA = """
local merge = ARGV[1] == 'ids'
local out = {}
for i = 1, #KEYS do
  local f, id = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('HSETNX', KEYS[i], f, id) == 1 then
    out[i] = 1
  elseif not merge then
    out[i] = 0
  else
    local old = redis.call('HGET', KEYS[i], f)
    if string.find(',' .. old .. ',', ',' .. id .. ',', 1, true) then
      out[i] = 0
    else
      local ids = {}
      for x in string.gmatch(old, '[^,]+') do ids[#ids + 1] = tonumber(x) end
      ids[#ids + 1] = tonumber(id)
      table.sort(ids)
      for j = 1, #ids do ids[j] = string.format('%d', ids[j]) end
      redis.call('HSET', KEYS[i], f, table.concat(ids, ','))
      out[i] = 2
    end
  end
end
return out
"""


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
    sink = _RowSink(p, g, list_name, res.metas, res.bloom, batch_size, handoff.put)
    mode = "single" if list_name == "exceptions" else "ids"
    script = r.register_script(_IMPORT_LUA) if atomic else None

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
    try:
        while True:
            item = await handoff.get()
            if isinstance(item, _Done):
                res.rows = item.read
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Batch)
            if check is not None:
                check()
            if item.metas:
                metas: dict[Any, Any] = item.metas
                await r.hset(k_meta(p, g), mapping=metas)
            if item.rows:
                if script is not None:
                    await _write_atomic(script, item.rows, mode, res)
                else:
                    await _write_pipelined(r, item.rows, mode, res)
            res.rows = item.read
            if progress is not None:
                progress(item.read)
    finally:
        handoff.aborted.set()
        with contextlib.suppress(BaseException):
            await producer
    return res


async def _write_atomic(script: AsyncScript, rows: Sequence[_Row], mode: str, res: LoadResult) -> None:
    args: list[str] = [mode]
    for row in rows:
        args.append(row[1])
        args.append(row[2])
    flags: list[int] = await script(keys=[row[0] for row in rows], args=args)
    count, checksum, digest, dups = 0, 0, 0, 0
    for row, flag in zip(rows, flags, strict=True):
        if flag == 1:
            count += 1
            checksum ^= row[3]
            digest ^= row[4]
        else:
            dups += 1
            if flag == 2:
                digest ^= row[4]
    res.count += count
    res.checksum ^= checksum
    res.digest ^= digest
    res.duplicates += dups


async def _write_pipelined(r: AnyRedis, rows: Sequence[_Row], mode: str, res: LoadResult) -> None:
    pipe = r.pipeline(transaction=False)
    for key, fld, mid, _, _ in rows:
        pipe.hsetnx(key, fld, mid)
    flags: list[int] = await pipe.execute()
    dup_rows = []
    for row, flag in zip(rows, flags, strict=True):
        if flag:
            res.count += 1
            res.checksum ^= row[3]
            res.digest ^= row[4]
        else:
            res.duplicates += 1
            dup_rows.append(row)
    if not dup_rows or mode == "single":
        return
    pipe = r.pipeline(transaction=False)
    for key, fld, *_ in dup_rows:
        pipe.hget(key, fld)
    olds: list[bytes] = await pipe.execute()
    # A field may repeat among the duplicates: merge into the value written just before.
    overlay: dict[tuple[str, str], str] = {}
    for (key, fld, mid, _, hp), old in zip(dup_rows, olds, strict=True):
        merged = merge_ids(overlay.get((key, fld), old), mid)
        if merged is not None:
            overlay[(key, fld)] = merged
            res.digest ^= hp
    if overlay:
        pipe = r.pipeline(transaction=False)
        for (key, fld), value in overlay.items():
            pipe.hset(key, fld, value)
        await pipe.execute()


# --- reading generations back ------------------------------------------------------------


async def scan_keys(r: AnyRedis, pattern: str, count: int = _SCAN_COUNT) -> AsyncIterator[list[bytes]]:
    """Keys matching ``pattern`` in batches (a key may repeat: SCAN's guarantee)."""
    batch: list[bytes] = []
    async for key in r.scan_iter(match=pattern, count=count):
        batch.append(key)
        if len(batch) >= _KEYS_PER_CALL:
            yield batch
            batch = []
    if batch:
        yield batch


def _bucket_pattern(p: str, g: int, list_name: str) -> str:
    letter = "x" if list_name == "exceptions" else "e"
    return f"{glob_escape(p)}:g:{g}:{letter}:*"


async def _hkeys(r: AnyRedis, keys: Sequence[bytes | str]) -> list[list[bytes]]:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hkeys(key)
    out: list[list[bytes]] = await pipe.execute()
    return out


async def _generation_fields(
    r: AnyRedis, p: str, g: int, list_name: str
) -> AsyncIterator[tuple[bytes | str, list[bytes]]]:
    """(key, fields) for every data hash of generation ``g`` (each key once)."""
    if list_name == RULES:
        keys: list[bytes | str] = [k_tac(p, g), k_ranges(p, g)]
        for key, fields in zip(keys, await _hkeys(r, keys), strict=True):
            yield key, fields
        return
    seen: set[bytes] = set()  # bucket names only: ~200 k for 10 M IMEIs
    async for batch in scan_keys(r, _bucket_pattern(p, g, list_name)):
        fresh = [k for k in dict.fromkeys(batch) if k not in seen]
        seen.update(fresh)
        if fresh:
            for key, fields in zip(fresh, await _hkeys(r, fresh), strict=True):
                yield key, fields


def _lines(list_name: str, key: bytes | str, fields: Iterable[bytes]) -> Iterable[str]:
    if list_name == RULES:
        kb = key.encode() if isinstance(key, str) else key
        make = rule_tac_line if kb.endswith(b":tac") else rule_range_line
        return (make(f.decode()) for f in fields)
    kb = key if isinstance(key, bytes) else key.encode()
    base = int(kb.rsplit(b":", 1)[1]) * BUCKET
    if list_name == "exceptions":
        out = []
        for f in fields:
            low, _, imsi = f.decode().partition(":")
            out.append(f"exceptions,{base + int(low):014d},{imsi}")
        return out
    return (f"{list_name},{base + int(f):014d}" for f in fields)


async def scan_generation(r: AnyRedis, p: str, g: int, list_name: str) -> tuple[int, int]:
    """(entries, checksum) of generation ``g`` as Redis holds it, recomputed by a scan."""
    count, checksum = 0, 0
    sha = hashlib.sha256
    async for key, fields in _generation_fields(r, p, g, list_name):
        count += len(fields)
        for line in _lines(list_name, key, fields):
            checksum ^= int.from_bytes(sha(line.encode()).digest()[:16], "big")
    return count, checksum


async def rebuild_bloom(r: AnyRedis, p: str, g: int, list_name: str, expected: int, fp_rate: float) -> Bloom:
    """A fresh filter over generation ``g``'s IMEIs, from a scan."""
    bloom = new_bloom(expected, fp_rate)
    async for key, fields in _generation_fields(r, p, g, list_name):
        base = int(key.rsplit(b":", 1)[1] if isinstance(key, bytes) else key.rsplit(":", 1)[1]) * BUCKET
        if list_name == "exceptions":
            bloom.update(base + int(f.split(b":", 1)[0]) for f in fields)
        else:
            bloom.update(base + int(f) for f in fields)
    return bloom


# KEYS: (current hash, new hash) pairs. Returns {entries of the current hashes, of
# them absent from the new}: the removals guard, without moving the fields to the client.
_COMPARE_LUA = """
local n, gone = 0, 0
for i = 1, #KEYS, 2 do
  local fields = redis.call('HKEYS', KEYS[i])
  n = n + #fields
  for _, f in ipairs(fields) do
    if redis.call('HEXISTS', KEYS[i + 1], f) == 0 then gone = gone + 1 end
  end
end
return {n, gone}
"""


async def compare_generations(
    r: AnyRedis, p: str, cur: int, new: int, list_name: str, *, atomic: bool
) -> tuple[int, int]:
    """(entries of generation ``cur``, of them absent from generation ``new``), streaming
    over ``cur``'s buckets and probing the same bucket of ``new``."""
    old_prefix = f"{p}:g:{cur}:".encode()
    new_prefix = f"{p}:g:{new}:".encode()
    pairs: list[tuple[bytes, bytes]] = []
    if list_name == RULES:
        pairs = [
            (k_tac(p, cur).encode(), k_tac(p, new).encode()),
            (k_ranges(p, cur).encode(), k_ranges(p, new).encode()),
        ]
        return await _compare_pairs(r, pairs, atomic)
    total, gone = 0, 0
    seen: set[bytes] = set()
    async for batch in scan_keys(r, _bucket_pattern(p, cur, list_name)):
        fresh = [k for k in dict.fromkeys(batch) if k not in seen]
        seen.update(fresh)
        pairs = [(k, new_prefix + k[len(old_prefix) :]) for k in fresh]
        if pairs:
            n, x = await _compare_pairs(r, pairs, atomic)
            total += n
            gone += x
    return total, gone


async def _compare_pairs(r: AnyRedis, pairs: Sequence[tuple[bytes, bytes]], atomic: bool) -> tuple[int, int]:
    if atomic:
        script = r.register_script(_COMPARE_LUA)
        res: list[int] = await script(keys=[k for pair in pairs for k in pair])
        return int(res[0]), int(res[1])
    fields = await _hkeys(r, [k for pair in pairs for k in pair])
    total, gone = 0, 0
    for i in range(0, len(fields), 2):
        old, new = fields[i], set(fields[i + 1])
        total += len(old)
        gone += sum(1 for f in old if f not in new)
    return total, gone


async def delete_generations(r: AnyRedis, p: str, gens: Iterable[int]) -> int:
    """UNLINK every key of the generations ``gens`` in batches from one SCAN; each
    generation's ``info`` goes last, so a generation interrupted half-way is still
    listed (and found by the next clean-up). Returns the keys removed."""
    wanted = {str(g).encode() for g in gens}
    if not wanted:
        return 0
    head = f"{p}:g:".encode()
    infos: list[bytes] = []
    removed = 0
    async for batch in scan_keys(r, f"{glob_escape(p)}:g:*"):
        doomed: list[bytes] = []
        for key in dict.fromkeys(batch):
            gen, _, rest = key[len(head) :].partition(b":")
            if gen in wanted:
                (infos if rest == b"info" else doomed).append(key)
        if doomed:
            removed += await _unlink(r, doomed)
    if infos:
        removed += await _unlink(r, infos)
    return removed


async def _unlink(r: AnyRedis, keys: Sequence[bytes]) -> int:
    n: Any = await r.unlink(*keys)  # a cluster client splits it by slot
    return int(n)
