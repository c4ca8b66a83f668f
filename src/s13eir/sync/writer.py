"""The list writer: snapshot imports into new generations, changes, rollback, status,
and the writer lock. Follows :mod:`s13eir.lists.redis_layout` (the readers' contract).

One writer at a time: every method assumes its caller holds the writer lock
(:func:`writer_lock`), and a writer constructed with that lock fences its
writes with the lock's token (on a single server the scripts refuse to write once
the token is gone; on a Cluster the token is checked before each batch).

Import (:meth:`ListWriter.import_snapshot`), step by step:

1. Count the file's lines (a binary pass at disk speed): the Bloom filter is sized
   from it before any row is read, so it never needs a second parse nor a resize.
2. Remove leftovers of this list (generations neither current nor previous, e.g.
   of an import that crashed), then ``INCR P:nextgen`` -> ``g``, ``info.state=loading``.
3. Stream the rows into ``g`` (:func:`~s13eir.sync.imports.load_generation`),
   allocating meta ids and computing count, ``checksum`` and ``digest`` as fields
   are created.
4. Verify: re-read ``g`` with SCAN + HKEYS and recompute count and checksum; a
   mismatch (a write lost to a failover, say) fails the import. Then the Bloom
   filter goes to ``P:g:{g}:bloom``.
5. Compare with the current generation: its entries (counted, not taken from
   ``info``) and how many are absent from ``g`` (bucket by bucket, the field names of
   both compared as sets; run while step 4 runs). Same count, checksum and digest:
   ``unchanged``.
   Otherwise the guards (:mod:`s13eir.lists.guards`) decide, unless ``force``.
6. Flip: ``P:current[list] = g``, ``P:previous[list] = old``, ``INCR P:seq``,
   ``info.state=ready``/``info.seq`` and the stream's ``generation`` record, in one
   script on a single server. On a Cluster in the order info, current, previous,
   record: a crash before the record is repaired by :meth:`ListWriter.replay_unapplied`.
7. Delete the generations of the list older than the previous one.

Any failure or refusal deletes ``g``; the current generation is never touched.

Changes (:meth:`ListWriter.apply_changes`) go to each list's current generation.
Semantics, for writers of feeds:

* ``add``: the entry gains the meta id of (list, source, reason) (created if new);
  an entry listed for several reasons keeps them all. Exception pairs carry one
  id: the latest add's.
* ``remove`` with an empty ``source``: the entry goes, whatever its reasons.
  With a ``source`` (and optionally a ``reason``): only the ids of that source (and
  reason) go, and the entry when none is left. Exception pairs always go.

Both are idempotent, which is what makes replaying a stream tail safe.

Info fields maintained beyond the contract's: ``digest`` (see
:mod:`s13eir.sync.imports`; removed by the first change, since a change's effect on
it is not computable server-side: the next import of the same content then makes
a new generation instead of reporting ``unchanged``), ``adds`` (entries added by
changes since the generation's Bloom filter was built: a rollback to a generation
with adds rebuilds its filter first, so a node that loads it misses none of them)
and ``rows``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from redis.asyncio.cluster import RedisCluster

from s13eir.backends.redis_client import AnyRedis
from s13eir.config import GuardsConfig
from s13eir.decision.model import ListKind
from s13eir.lists.bloom import DEFAULT_FP_RATE, new_bloom
from s13eir.lists.formats import ListFormatError, ListSpec
from s13eir.lists.guards import GuardVerdict, evaluate_guards, refused
from s13eir.lists.redis_layout import (
    ALL_LISTS,
    LISTS,
    RULES,
    Change,
    change_fields,
    entry_line,
    exception_field,
    generation_record,
    imei_field,
    k_bloom,
    k_changes,
    k_current,
    k_epoch,
    k_exception_bucket,
    k_feed,
    k_imei_bucket,
    k_info,
    k_lock,
    k_meta,
    k_nextgen,
    k_previous,
    k_seq,
    parse_change,
)
from s13eir.supervision import Supervisor
from s13eir.sync.imports import (
    DEFAULT_BATCH,
    EMPTY_CHECKSUM,
    MetaIds,
    compare_generations,
    count_lines,
    delete_generations,
    glob_escape,
    h128,
    hex128,
    load_generation,
    merge_ids,
    raise_if_cancelled,
    read_meta,
    rebuild_bloom,
    scan_generation,
    scan_keys,
)

__all__ = [
    "DEFAULT_STREAM_MAXLEN",
    "FORMATS_FOR_LIST",
    "ImportReport",
    "ListWriter",
    "WriterError",
    "WriterLock",
    "WriterLockHeld",
    "WriterLockLost",
    "writer_lock",
]

log = logging.getLogger(__name__)

# The stream is trimmed (approximately) to this many records: a node further behind
# finds a gap and reloads the current generations.
DEFAULT_STREAM_MAXLEN: Final = 1_000_000
_CHANGES_PER_CALL: Final = 500

# Which file formats can make a snapshot of which list.
FORMATS_FOR_LIST: Final[Mapping[str, tuple[str, ...]]] = {
    "black": ("dirbs-blacklist", "csv"),
    "grey": ("dirbs-blacklist", "csv"),
    "white": ("dirbs-blacklist", "csv"),
    "exceptions": ("dirbs-exceptions",),
    RULES: ("rules-yaml", "tac-csv", "range-csv"),
}


class WriterError(Exception):
    """The writer could not do what it was asked; the lists are as they were."""


class WriterLockHeld(WriterError):
    def __init__(self, key: str, holder: str, ttl_ms: int) -> None:
        super().__init__(
            f"the writer lock {key} is held by {holder or '(unknown)'}"
            + (f" (expires in {ttl_ms / 1000:.1f} s unless renewed)" if ttl_ms > 0 else "")
        )
        self.holder = holder
        self.ttl_ms = ttl_ms


class WriterLockLost(WriterError):
    """The lock expired or was taken over while this writer worked: it stopped writing."""


# --- the writer lock ------------------------------------------------------------------

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(slots=True)
class WriterLock:
    key: str
    token: str  # "<host>:<pid>:<random>": readable as the holder's name, unique per run
    ttl_ms: int
    lost: bool = False


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def writer_lock(
    redis: AnyRedis,
    prefix: str,
    ttl_s: float,
    *,
    wait: bool = False,
    poll_s: float = 0.5,
    holder: str | None = None,
    supervisor: Supervisor | None = None,
) -> AsyncIterator[WriterLock]:
    """Hold ``P:lock:writer`` for the block: ``SET NX PX``, renewed every ttl/3 by a
    task, released only if still ours (compare-and-delete script).

    Held by another process: with ``wait`` (the sync process) poll until it is free,
    which is at the latest ``ttl_s`` after its holder died; without (the CLI) raise
    :class:`WriterLockHeld` naming the holder. If a renewal finds the lock gone, the
    lock is marked ``lost`` (writers built with it then refuse to write) and
    :class:`WriterLockLost` is raised when the block ends.
    """
    key = k_lock(prefix)
    ttl_ms = max(1, int(ttl_s * 1000))
    lock = WriterLock(key, f"{holder or default_holder()}:{secrets.token_hex(6)}", ttl_ms)
    while not await redis.set(key, lock.token, nx=True, px=ttl_ms):
        if not wait:
            other = _text(await redis.get(key))
            pttl = int(await redis.pttl(key))
            if not other:
                continue  # released between the SET and the GET: try again
            raise WriterLockHeld(key, other, pttl)
        await asyncio.sleep(min(poll_s, ttl_s / 3))
    renew = redis.register_script(_RENEW_LUA)
    release = redis.register_script(_RELEASE_LUA)

    async def keep() -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                ok = await renew(keys=[key], args=[lock.token, ttl_ms])
            except Exception as exc:  # a blip: retry until the lock would have expired anyway
                if time.monotonic() - last_ok >= ttl_ms / 1000:
                    log.error("writer lock %s: cannot renew (%s); stopping writes", key, exc)
                    lock.lost = True
                    return
                continue
            if not ok:
                log.error("writer lock %s was lost (expired or taken over); stopping writes", key)
                lock.lost = True
                return
            last_ok = time.monotonic()

    # Supervised: a renewal that died by a bug would let the lock expire under a writer
    # that goes on writing, while another process takes it.
    task = (supervisor or Supervisor()).start("writer-lock-renewal", keep)
    try:
        yield lock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not lock.lost:
            with contextlib.suppress(Exception):  # unreachable Redis: the lock expires by itself
                await release(keys=[key], args=[lock.token])
    if lock.lost:
        raise WriterLockLost(f"the writer lock {key} was lost while writing")


# --- scripts (single server and Sentinel) ------------------------------------------------

_LUA_HELPERS = """
local EMPTY = string.rep('0', 32)
local function xor128(a, b)
  local out = {}
  for j = 0, 3 do
    local s = j * 8 + 1
    out[j + 1] = bit.tohex(bit.bxor(tonumber(string.sub(a, s, s + 7), 16), tonumber(string.sub(b, s, s + 7), 16)), 8)
  end
  return table.concat(out)
end
local function fenced(lock, token)
  return token == '' or redis.call('GET', lock) == token
end
local function stream_add(stream, maxlen, seq, gen, op, lst, imei, imsi, reason, source)
  local x = {'XADD', stream}
  if maxlen ~= '0' then x[#x + 1] = 'MAXLEN'; x[#x + 1] = '~'; x[#x + 1] = maxlen end
  local s = string.format('%d', seq)
  for _, v in ipairs({s .. '-0', 'seq', s, 'gen', gen, 'op', op, 'list', lst, 'imei', imei, 'imsi', imsi,
                      'reason', reason, 'source', source}) do x[#x + 1] = v end
  redis.call(unpack(x))
end
"""

# KEYS: lock, current, previous, seq, changes, info of the generation made current.
# ARGV: token, list, new current, new previous ('' = none), expected current ('' = none),
# stream maxlen ('0' = untrimmed). Returns the seq of the generation record.
_FLIP_LUA = (
    _LUA_HELPERS
    + """
if not fenced(KEYS[1], ARGV[1]) then return redis.error_reply('LOCKLOST writer lock not held') end
local cur = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if cur ~= ARGV[5] then
  return redis.error_reply('CURCHANGED ' .. ARGV[2] .. ' is at generation ' .. cur .. ', expected ' .. ARGV[5])
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[6], 'state', 'ready', 'seq', seq)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) else redis.call('HDEL', KEYS[3], ARGV[2]) end
stream_add(KEYS[5], ARGV[6], seq, ARGV[3], 'generation', ARGV[2], '', '', '', '')
return seq
"""
)

# KEYS: lock, current, seq, changes, feed (any key when no feed); then per change its
# bucket, meta and info keys. ARGV: token, feed seq ('' = none), stream maxlen; then per
# change 12 values (see _ARGS_PER_CHANGE). Validates everything before the first write
# (a script is not rolled back on error). Returns {changes applied, last seq}.
_APPLY_LUA = (
    _LUA_HELPERS
    + """
local function split(s)
  local t = {}
  for x in string.gmatch(s, '[^,]+') do t[#t + 1] = tonumber(x) end
  return t
end
local function join(t)
  table.sort(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = string.format('%d', v) end
  return table.concat(s, ',')
end
local function account(info, delta, h)
  redis.call('HINCRBY', info, 'count', delta)
  redis.call('HSET', info, 'checksum', xor128(redis.call('HGET', info, 'checksum') or EMPTY, h))
  if delta > 0 then redis.call('HINCRBY', info, 'adds', 1) end
end
local W = 12
if not fenced(KEYS[1], ARGV[1]) then return redis.error_reply('LOCKLOST writer lock not held') end
local n = (#ARGV - 3) / W
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[5], 'seq')
  if done and tonumber(done) >= tonumber(ARGV[2]) then
    return {0, tonumber(redis.call('GET', KEYS[3]) or '0')}
  end
end
for i = 0, n - 1 do
  local a = 3 + i * W
  if redis.call('HGET', KEYS[2], ARGV[a + 2]) ~= ARGV[a + 7] then
    return redis.error_reply('GENCHANGED ' .. ARGV[a + 2] .. ' is no longer at generation ' .. ARGV[a + 7])
  end
end
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 0, n - 1 do
  local a = 3 + i * W
  local k = 5 + i * 3
  local op, lst, fld, mid, h, rm = ARGV[a + 1], ARGV[a + 2], ARGV[a + 8], ARGV[a + 9], ARGV[a + 11], ARGV[a + 12]
  local bk, mk, ik = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  seq = redis.call('INCR', KEYS[3])
  stream_add(KEYS[4], ARGV[3], seq, ARGV[a + 7], op, lst, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  local old = redis.call('HGET', bk, fld)
  if op == 'add' then
    redis.call('HSETNX', mk, mid, ARGV[a + 10])
    if not old then
      redis.call('HSET', bk, fld, mid)
      account(ik, 1, h)
      redis.call('HDEL', ik, 'digest')
    elseif lst == 'exceptions' then
      if old ~= mid then
        redis.call('HSET', bk, fld, mid)
        redis.call('HDEL', ik, 'digest')
      end
    elseif not string.find(',' .. old .. ',', ',' .. mid .. ',', 1, true) then
      local ids = split(old)
      ids[#ids + 1] = tonumber(mid)
      redis.call('HSET', bk, fld, join(ids))
      redis.call('HDEL', ik, 'digest')
    end
  elseif old then
    local keep, all = {}, split(old)
    if rm ~= '*' then
      local drop = {}
      for x in string.gmatch(rm, '[^,]+') do drop[tonumber(x)] = true end
      for _, v in ipairs(all) do if not drop[v] then keep[#keep + 1] = v end end
    end
    if #keep == 0 then
      redis.call('HDEL', bk, fld)
      account(ik, -1, h)
      redis.call('HDEL', ik, 'digest')
    elseif #keep < #all then
      redis.call('HSET', bk, fld, join(keep))
      redis.call('HDEL', ik, 'digest')
    end
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[5], 'seq', ARGV[2]) end
return {n, seq}
"""
)


# --- reports -----------------------------------------------------------------------------

ImportStatus = Literal["imported", "unchanged", "refused"]


@dataclass(slots=True)
class ImportReport:
    list_name: str
    status: ImportStatus  # what happened, or with dry_run what would have
    dry_run: bool
    forced: bool
    generation: int  # the generation loaded (deleted again unless status is imported and not dry_run)
    previous: int | None  # the list's current generation before the import
    rows: int  # rows read from the file
    count: int  # distinct entries of the new generation
    checksum: str
    duplicates: int
    current_count: int | None  # entries of the current generation, counted in Redis
    adds: int
    removals: int
    verdicts: list[GuardVerdict] = field(default_factory=list)
    seq: int | None = None  # the generation record's seq, when made current
    seconds: float = 0.0
    bloom_bytes: int = 0

    @property
    def applied(self) -> bool:
        return self.status == "imported" and not self.dry_run

    def summary(self) -> str:
        verb = {"imported": "would import" if self.dry_run else "imported", "unchanged": "unchanged",
                "refused": "would be refused" if self.dry_run else "REFUSED"}[self.status]  # fmt: skip
        was = "none" if self.current_count is None else f"{self.current_count}"
        lines = [
            f"{self.list_name}: {verb}: {self.count} entries from {self.rows} rows"
            f" ({self.duplicates} duplicate rows), was {was}: +{self.adds} -{self.removals}"
            f" in {self.seconds:.1f} s",
            *(f"  guard {v}" for v in self.verdicts),
        ]
        if self.applied:
            lines.append(f"  generation {self.generation} is current (seq {self.seq}), checksum {self.checksum}")
        elif self.status == "refused" and not self.dry_run:
            lines.append("  the current generation is unchanged; --force imports anyway")
        return "\n".join(lines)


# --- changes ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    change: Change
    gen: int
    bucket: str
    field: str
    meta_id: str  # add: the id to set; remove: ""
    meta_text: str
    share: str  # checksum share of the entry line, 32 hex
    remove: str  # remove: "*" (all ids) or the comma-separated ids to drop

    def argv(self) -> list[str]:
        c = self.change
        return [c.op, c.list, c.imei, c.imsi, c.reason, c.source, str(self.gen), self.field, self.meta_id,
                self.meta_text, self.share, self.remove]  # fmt: skip


def _check_change(c: Change) -> None:
    if c.list not in LISTS:
        raise ValueError(f"change {c!r}: list must be one of {', '.join(LISTS)}")
    if c.op not in ("add", "remove"):
        raise ValueError(f"change {c!r}: op must be add or remove")
    if not (len(c.imei) == 14 and c.imei.isascii() and c.imei.isdigit()):
        raise ValueError(f"change {c!r}: imei must be a 14-digit key")
    if c.list == "exceptions":
        if not (5 <= len(c.imsi) <= 15 and c.imsi.isascii() and c.imsi.isdigit()):
            raise ValueError(f"change {c!r}: an exception needs a 5-15 digit imsi")
    elif c.imsi:
        raise ValueError(f"change {c!r}: only exceptions carry an imsi")


def _chunks(changes: Sequence[Change], size: int) -> Iterable[Sequence[Change]]:
    """Slices of about ``size``, never splitting consecutive changes of one entry (a
    DIRBS ``changed`` row is a remove and an add: readers never see the gap)."""
    start = 0
    while start < len(changes):
        end = min(start + size, len(changes))
        while end < len(changes) and (changes[end].list, changes[end].imei) == (
            changes[end - 1].list,
            changes[end - 1].imei,
        ):
            end += 1
        yield changes[start:end]
        start = end


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int | None:
    text = _text(value)
    return int(text) if text else None


# --- the writer ---------------------------------------------------------------------------


class ListWriter:
    """Writes the lists into Redis for every EIR node to read. See the module docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        prefix: str,
        *,
        lock: WriterLock | None = None,
        bloom_fp_rate: float = DEFAULT_FP_RATE,
        atomic: bool | None = None,
        batch_size: int = DEFAULT_BATCH,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    ) -> None:
        """``atomic`` None: scripts on a single server or Sentinel, the log-then-apply
        path on a Cluster (False forces that path anywhere, for tests)."""
        self.r = redis
        self.p = prefix
        self.lock = lock
        self.bloom_fp_rate = bloom_fp_rate
        self.atomic = not isinstance(redis, RedisCluster) if atomic is None else atomic
        self.batch_size = batch_size
        self.stream_maxlen = stream_maxlen
        self._token = lock.token if lock is not None else ""
        self._flip_script = redis.register_script(_FLIP_LUA)
        self._apply_script = redis.register_script(_APPLY_LUA)

    # -- small helpers ----------------------------------------------------------------

    def _check_lock(self) -> None:
        """Before each step that writes: stop if the lock is lost or the task cancelled."""
        raise_if_cancelled()
        if self.lock is not None and self.lock.lost:
            raise WriterLockLost(f"the writer lock {self.lock.key} was lost: not writing")

    async def _check_lock_remote(self) -> None:
        """The Cluster path's fencing: the token is checked before each batch."""
        self._check_lock()
        if self.lock is not None:
            token = await self.r.get(self.lock.key)
            if _text(token) != self._token:
                self.lock.lost = True
                raise WriterLockLost(f"the writer lock {self.lock.key} is no longer ours: not writing")

    async def _gen(self, key: str, list_name: str) -> int | None:
        return _int(await self.r.hget(key, list_name))

    async def _info(self, g: int) -> dict[str, str]:
        raw = await self.r.hgetall(k_info(self.p, g))
        return {_text(k): _text(v) for k, v in raw.items()}

    def _script_error(self, exc: Exception) -> Exception:
        text = str(exc)
        if "LOCKLOST" in text:
            if self.lock is not None:
                self.lock.lost = True
            return WriterLockLost(f"the writer lock was lost: {text}")
        if "GENCHANGED" in text or "CURCHANGED" in text:
            return WriterError(f"another writer changed the lists: {text}")
        return exc

    async def _drop(self, gens: Iterable[int]) -> None:
        gens = list(gens)
        if gens:
            n = await delete_generations(self.r, self.p, gens)
            log.info("deleted generations %s (%d keys)", gens, n)

    async def _collect(self, list_name: str, keep: Iterable[int | None]) -> list[int]:
        """Delete this list's generations other than ``keep`` (older ones, or leftovers
        of an import that died). Returns those deleted."""
        keep_set = {g for g in keep if g is not None}
        stale: list[int] = []
        head = len(f"{self.p}:g:")
        async for batch in scan_keys(self.r, f"{glob_escape(self.p)}:g:*:info"):
            pipe = self.r.pipeline(transaction=False)
            for key in batch:
                pipe.hget(key, "list")
            for key, owner in zip(batch, await pipe.execute(), strict=True):
                gen = key[head:].split(b":", 1)[0]
                if _text(owner) == list_name and gen.isdigit() and int(gen) not in keep_set:
                    stale.append(int(gen))
        stale = sorted(set(stale))
        await self._drop(stale)
        return stale

    async def _flip(self, list_name: str, new: int, new_previous: int | None, expected: int | None) -> int:
        """Make ``new`` current (and ``new_previous`` previous) with its stream record."""
        self._check_lock()
        p = self.p
        await self.r.hset(k_info(p, new), "epoch", await self._epoch())
        if self.atomic:
            try:
                seq = await self._flip_script(
                    keys=[k_lock(p), k_current(p), k_previous(p), k_seq(p), k_changes(p), k_info(p, new)],
                    args=[
                        self._token,
                        list_name,
                        new,
                        "" if new_previous is None else new_previous,
                        "" if expected is None else expected,
                        self.stream_maxlen,
                    ],
                )
            except Exception as exc:
                raise self._script_error(exc) from exc
            return int(seq)
        # Cluster: the keys live in different slots. Pointer first, record second: a crash
        # in between leaves info.seq ahead of the stream, which replay_unapplied() repairs.
        await self._check_lock_remote()
        if await self._gen(k_current(p), list_name) != expected:
            raise WriterError(f"another writer changed the {list_name} list")
        seq = int(await self.r.incr(k_seq(p)))
        await self.r.hset(k_info(p, new), mapping={"state": "ready", "seq": seq})
        await self.r.hset(k_current(p), list_name, str(new))
        if new_previous is None:
            await self.r.hdel(k_previous(p), list_name)
        else:
            await self.r.hset(k_previous(p), list_name, str(new_previous))
        await self._xadd(generation_record(seq, new, list_name), seq)
        return seq

    async def _epoch(self) -> str:
        """The store's epoch, created by the first flip on a store that has none (a new
        store, or one that lost its data: nodes then know it is not the one they read)."""
        p = self.p
        await self.r.set(k_epoch(p), f"{int(time.time())}-{secrets.token_hex(6)}", nx=True)
        return _text(await self.r.get(k_epoch(p)))

    async def _xadd(self, fields: Mapping[str, str], seq: int) -> None:
        maxlen = self.stream_maxlen or None
        record: dict[Any, Any] = dict(fields)
        await self.r.xadd(k_changes(self.p), record, id=f"{seq}-0", maxlen=maxlen, approximate=True)

    # -- import -------------------------------------------------------------------------

    @staticmethod
    def check_spec(spec: ListSpec, list_name: str) -> ListSpec:
        """``spec`` fit to make a snapshot of ``list_name`` (a ``dirbs-blacklist`` spec gets
        the list), or ListFormatError naming the file."""
        if list_name not in ALL_LISTS:
            raise ValueError(f"list {list_name!r} is not one of {', '.join(ALL_LISTS)}")
        allowed = FORMATS_FOR_LIST[list_name]
        if spec.format not in allowed:
            raise ListFormatError(
                spec.path, 0, f"format {spec.format!r} cannot make the {list_name} list (use {' or '.join(allowed)})"
            )
        if spec.format == "dirbs-blacklist":
            if spec.list is not None and spec.list.value != list_name:
                raise ListFormatError(spec.path, 0, f"spec names list {spec.list.value!r}, importing {list_name!r}")
            return ListSpec(spec.path, spec.format, ListKind(list_name))
        return spec

    async def import_snapshot(
        self,
        spec: ListSpec,
        list_name: str,
        *,
        dry_run: bool = False,
        force: bool = False,
        guards: GuardsConfig,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Replace ``list_name`` by the contents of ``spec`` (see the module docstring).

        Raises ListFormatError (file and line) for a bad file, WriterError if the
        written generation does not read back as written, WriterLockLost; in every
        case the current generation is untouched and the new one deleted.
        """
        t0 = time.monotonic()
        spec = self.check_spec(spec, list_name)
        self._check_lock()
        p = self.p
        expected_rows = await asyncio.to_thread(count_lines, spec.path)
        cur = await self._gen(k_current(p), list_name)
        prev = await self._gen(k_previous(p), list_name)
        await self._collect(list_name, keep=(cur, prev))
        g = int(await self.r.incr(k_nextgen(p)))
        await self.r.hset(
            k_info(p, g),
            mapping={
                "list": list_name,
                "state": "loading",
                "source": spec.path,
                "created": int(time.time()),
                "count": 0,
                "checksum": EMPTY_CHECKSUM,
            },
        )
        keep = False
        try:
            res = await load_generation(
                self.r, p, g, spec, list_name,
                atomic=self.atomic, bloom_fp_rate=self.bloom_fp_rate, expected_rows=expected_rows,
                batch_size=self.batch_size, progress=progress, check=self._check_lock,
            )  # fmt: skip
            self._check_lock()
            # Verify the new generation and compare the current one with it at once: both
            # only read, and Redis serves one while this process hashes for the other.
            cur_info = await self._info(cur) if cur is not None else {}
            current_count: int | None = None
            removals = 0
            scans: list[asyncio.Future[tuple[int, int]]] = [
                asyncio.ensure_future(scan_generation(self.r, p, g, list_name))
            ]
            if cur is not None:
                scans.append(asyncio.ensure_future(compare_generations(self.r, p, cur, g, list_name)))
            try:
                results = await asyncio.gather(*scans)
            finally:
                for task in scans:
                    task.cancel()
            count, checksum = results[0]
            if cur is not None:
                current_count, removals = results[1]
            if (count, checksum) != (res.count, res.checksum):
                raise WriterError(
                    f"generation {g} does not read back as written: {count} entries, checksum {hex128(checksum)};"
                    f" wrote {res.count}, {hex128(res.checksum)} (lost writes: a failover or eviction?)"
                )
            bloom_bytes = 0
            if res.bloom is not None:
                blob = res.bloom.save_bytes()
                bloom_bytes = len(blob)
                await self.r.set(k_bloom(p, g), blob)
            await self.r.hset(
                k_info(p, g),
                mapping={
                    "count": count,
                    "checksum": hex128(checksum),
                    "digest": hex128(res.digest),
                    "rows": res.rows,
                    "adds": 0,
                },
            )
            unchanged = (
                cur is not None
                and current_count == count
                and cur_info.get("checksum") == hex128(checksum)
                and cur_info.get("digest") == hex128(res.digest)
            )
            verdicts = evaluate_guards(current_count, count, removals, guards)
            status: ImportStatus = (
                "unchanged" if unchanged else "refused" if refused(verdicts) and not force else "imported"
            )
            report = ImportReport(
                list_name=list_name, status=status, dry_run=dry_run, forced=force and refused(verdicts),
                generation=g, previous=cur, rows=res.rows, count=count, checksum=hex128(checksum),
                duplicates=res.duplicates, current_count=current_count,
                adds=count - ((current_count or 0) - removals), removals=removals, verdicts=verdicts,
                bloom_bytes=bloom_bytes,
            )  # fmt: skip
            if report.applied:
                report.seq = await self._flip(list_name, g, cur, cur)  # checks the lock and cancellation first
                keep = True
        finally:
            if not keep:
                # Refused, unchanged, dry run or failed: the loading generation goes, even
                # when cancelled (the clean-up runs in the cancelled task's finally).
                await self._drop([g])
        if keep:
            try:
                await self._collect(list_name, keep=(g, cur))
            except Exception as exc:  # the import stands; the next one retries the clean-up
                log.warning("%s: deleting old generations failed: %s", list_name, exc)
        report.seconds = time.monotonic() - t0
        return report

    # -- rollback -------------------------------------------------------------------------

    async def rollback(self, list_name: str) -> int:
        """Make the previous generation current again (and the current one previous),
        with a generation record; returns the generation now current."""
        if list_name not in ALL_LISTS:
            raise ValueError(f"list {list_name!r} is not one of {', '.join(ALL_LISTS)}")
        self._check_lock()
        p = self.p
        cur = await self._gen(k_current(p), list_name)
        prev = await self._gen(k_previous(p), list_name)
        if cur is None or prev is None:
            raise WriterError(f"{list_name}: no previous generation to roll back to")
        info = await self._info(prev)
        if info.get("state") != "ready" or info.get("list") != list_name:
            raise WriterError(f"{list_name}: previous generation {prev} is not a ready {list_name} generation")
        if list_name != RULES and int(info.get("adds") or 0) > 0:
            # Changes added entries after its filter was built: a node loading the filter
            # would answer "not listed" for them. Rebuild it from the entries first.
            bloom = await rebuild_bloom(self.r, p, prev, list_name, int(info.get("count") or 0), self.bloom_fp_rate)
            await self.r.set(k_bloom(p, prev), bloom.save_bytes())
            await self.r.hset(k_info(p, prev), "adds", 0)
        await self._flip(list_name, prev, cur, cur)
        return prev

    # -- changes --------------------------------------------------------------------------

    async def _ensure_generation(self, list_name: str) -> int:
        """The list's current generation; an empty one is created for a list that has
        had no snapshot yet, so that changes have somewhere to go."""
        g = await self._gen(k_current(self.p), list_name)
        if g is not None:
            # A pointer to a generation without info (deleted by hand, a partial restore)
            # would have changes written into keys no reader trusts: refuse.
            owner, state = await self.r.hmget(k_info(self.p, g), ["list", "state"])
            if _text(owner) != list_name or _text(state) != "ready":
                raise WriterError(f"{list_name}: current generation {g} is not a ready {list_name} generation")
            return g
        g = int(await self.r.incr(k_nextgen(self.p)))
        await self.r.hset(
            k_info(self.p, g),
            mapping={
                "list": list_name,
                "state": "loading",
                "source": "",
                "created": int(time.time()),
                "count": 0,
                "checksum": EMPTY_CHECKSUM,
                "digest": EMPTY_CHECKSUM,
                "rows": 0,
                "adds": 0,
            },
        )
        if list_name != RULES:
            await self.r.set(k_bloom(self.p, g), new_bloom(0, self.bloom_fp_rate).save_bytes())
        await self._flip(list_name, g, None, None)
        return g

    def _item(self, c: Change, gen: int, metas: MetaIds) -> _Item:
        n = int(c.imei)
        if c.list == "exceptions":
            bucket, fld, line = (
                k_exception_bucket(self.p, gen, n),
                exception_field(n, c.imsi),
                entry_line(c.list, c.imei, c.imsi),
            )
        else:
            bucket, fld, line = k_imei_bucket(self.p, gen, n), imei_field(n), entry_line(c.list, c.imei)
        if c.op == "add":
            mid = metas.id_for(c.list, c.source, c.reason)
            metas.pending.clear()  # written with the change (HSETNX), not separately
            return _Item(c, gen, bucket, fld, str(mid), metas.by_id[mid], hex128(h128(line)), "")
        if c.list == "exceptions" or not c.source:
            drop = "*"
        else:
            drop = ",".join(str(m) for m in metas.matching(c.list, c.source, c.reason))
        return _Item(c, gen, bucket, fld, "", "", hex128(h128(line)), drop)

    async def apply_changes(
        self, changes: Sequence[Change], *, feed: str | None = None, feed_seq: int | None = None
    ) -> int:
        """Log and apply ``changes`` in order to each list's current generation; returns
        the last seq. With ``feed``/``feed_seq``: the whole set in one script together
        with ``P:feed:{feed}`` seq, and nothing done if that seq is already stored
        (exactly once per feed seq, across crashes). Without: in atomic slices of ~500."""
        if (feed is None) != (feed_seq is None):
            raise ValueError("feed and feed_seq go together")
        for c in changes:
            _check_change(c)
        self._check_lock()
        p = self.p
        if feed is not None and not changes:
            return await self._mark_feed(feed, feed_seq)
        gens: dict[str, int] = {}
        for name in dict.fromkeys(c.list for c in changes):
            gens[name] = await self._ensure_generation(name)
        metas = {g: await read_meta(self.r, p, g) for g in gens.values()}
        slices: Iterable[Sequence[Change]] = [changes] if feed is not None else _chunks(changes, _CHANGES_PER_CALL)
        seq = 0
        for part in slices:
            self._check_lock()
            items = [self._item(c, gens[c.list], metas[gens[c.list]]) for c in part]
            if self.atomic:
                seq = await self._apply_atomic(items, feed, feed_seq)
            else:
                seq = await self._apply_logged(items, feed, feed_seq)
        return seq

    async def _mark_feed(self, feed: str, feed_seq: int | None) -> int:
        stored = _int(await self.r.hget(k_feed(self.p, feed), "seq"))
        if feed_seq is not None and (stored is None or stored < feed_seq):
            await self.r.hset(k_feed(self.p, feed), "seq", str(feed_seq))
        return _int(await self.r.get(k_seq(self.p))) or 0

    async def _apply_atomic(self, items: Sequence[_Item], feed: str | None, feed_seq: int | None) -> int:
        p = self.p
        keys = [k_lock(p), k_current(p), k_seq(p), k_changes(p), k_feed(p, feed) if feed else k_seq(p)]
        args: list[str] = [self._token, "" if feed_seq is None else str(feed_seq), str(self.stream_maxlen)]
        for it in items:
            keys += [it.bucket, k_meta(p, it.gen), k_info(p, it.gen)]
            args += it.argv()
        try:
            res = await self._apply_script(keys=keys, args=args)
        except Exception as exc:
            raise self._script_error(exc) from exc
        return int(res[1])

    async def _apply_logged(self, items: Sequence[_Item], feed: str | None, feed_seq: int | None) -> int:
        """Cluster: log every change of the slice (XADD), then apply them, then the feed seq.
        A crash in between leaves logged changes unapplied: replay_unapplied()."""
        p = self.p
        await self._check_lock_remote()
        if feed is not None and feed_seq is not None:
            stored = _int(await self.r.hget(k_feed(p, feed), "seq"))
            if stored is not None and stored >= feed_seq:
                return _int(await self.r.get(k_seq(p))) or 0
        for it in items:
            if await self._gen(k_current(p), it.change.list) != it.gen:
                raise WriterError(f"another writer changed the {it.change.list} list")
        last = int(await self.r.incrby(k_seq(p), len(items)))
        first = last - len(items) + 1
        pipe = self.r.pipeline(transaction=False)
        for seq, it in enumerate(items, first):
            pipe.xadd(k_changes(p), change_fields(seq, it.gen, it.change), id=f"{seq}-0",  # type: ignore[arg-type]
                      maxlen=self.stream_maxlen or None, approximate=True)  # fmt: skip
        await pipe.execute()
        await self._apply_plain(items)
        if feed is not None and feed_seq is not None:
            await self.r.hset(k_feed(p, feed), "seq", str(feed_seq))
        return last

    async def _apply_plain(self, items: Sequence[_Item]) -> None:
        """Apply already-logged changes with client-side read-modify-write (one writer:
        the lock holder). Same semantics and accounting as the script."""
        p = self.p
        pipe = self.r.pipeline(transaction=False)
        for it in items:
            pipe.hget(it.bucket, it.field)
        olds: list[bytes | None] = await pipe.execute()
        state: dict[tuple[str, str], str | None] = {}
        count: dict[int, int] = {}
        xor: dict[int, int] = {}
        adds: dict[int, int] = {}
        dirty: set[int] = set()
        metas: dict[tuple[int, str], str] = {}
        for it, raw in zip(items, olds, strict=True):
            key = (it.bucket, it.field)
            old = state[key] if key in state else (raw.decode() if raw is not None else None)
            new = old
            if it.change.op == "add":
                metas[(it.gen, it.meta_id)] = it.meta_text
                # An exception pair carries one id: the latest add's.
                merge = old is not None and it.change.list != "exceptions"
                new = (merge_ids(old, it.meta_id) or old) if old is not None and merge else it.meta_id
            elif old is not None:
                if it.remove == "*":
                    new = None
                else:
                    drop = {int(x) for x in it.remove.split(",") if x}
                    keep = [x for x in old.split(",") if x and int(x) not in drop]
                    new = ",".join(keep) or None
            if new == old:
                continue
            state[key] = new
            dirty.add(it.gen)
            if (old is None) != (new is None):
                delta = 1 if new is not None else -1
                count[it.gen] = count.get(it.gen, 0) + delta
                xor[it.gen] = xor.get(it.gen, 0) ^ int(it.share, 16)
                if delta > 0:
                    adds[it.gen] = adds.get(it.gen, 0) + 1
        pipe = self.r.pipeline(transaction=False)
        for (gen, mid), text in metas.items():
            pipe.hsetnx(k_meta(p, gen), mid, text)
        for (bucket, fld), value in state.items():
            if value is None:
                pipe.hdel(bucket, fld)
            else:
                pipe.hset(bucket, fld, value)
        await pipe.execute()
        for gen in dirty:
            info = k_info(p, gen)
            old_sum = _text(await self.r.hget(info, "checksum")) or EMPTY_CHECKSUM
            pipe = self.r.pipeline(transaction=False)
            pipe.hincrby(info, "count", count.get(gen, 0))
            pipe.hset(info, "checksum", hex128(int(old_sum, 16) ^ xor.get(gen, 0)))
            pipe.hincrby(info, "adds", adds.get(gen, 0))
            pipe.hdel(info, "digest")
            await pipe.execute()

    async def replay_unapplied(self, tail: int = _CHANGES_PER_CALL) -> int:
        """After a crash of a Cluster writer: re-apply the stream's last ``tail`` changes
        (a crashed writer leaves at most its last slice logged but unapplied; changes
        are idempotent and re-applied in order, so the result is the same), and write
        the generation record of a flip that died before its record. Harmless on a
        single server. Returns the number of changes re-applied."""
        p = self.p
        await self._check_lock_remote()
        raw = await self.r.xrevrange(k_changes(p), count=tail) or []
        last_seq = 0
        changes: list[tuple[int, Change]] = []
        for _id, fields in reversed(raw):
            seq, gen, what = parse_change({_text(k): _text(v) for k, v in (fields or {}).items()})
            last_seq = max(last_seq, seq)
            if isinstance(what, Change):
                changes.append((gen, what))
        metas: dict[int, MetaIds | None] = {}
        items: list[_Item] = []
        for gen, c in changes:
            if gen not in metas:
                # A generation deleted since has nothing to repair (None).
                metas[gen] = await read_meta(self.r, p, gen) if await self.r.exists(k_info(p, gen)) else None
            gen_metas = metas[gen]
            if gen_metas is not None:
                items.append(self._item(c, gen, gen_metas))
        if items:
            await self._apply_plain(items)
        for name in ALL_LISTS:
            g = await self._gen(k_current(p), name)
            if g is None:
                continue
            s = _int(await self.r.hget(k_info(p, g), "seq"))
            if s is not None and s > last_seq and not await self.r.xrange(k_changes(p), f"{s}-0", f"{s}-0"):
                await self._xadd(generation_record(s, g, name), s)
                last_seq = s
        return len(items)

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Per list: current and previous generation with their info; last seq; feed seqs;
        the stream's extent; the lock holder."""
        p = self.p
        lists: dict[str, Any] = {}
        for name in ALL_LISTS:
            entry: dict[str, Any] = {}
            for role, key in (("current", k_current(p)), ("previous", k_previous(p))):
                g = await self._gen(key, name)
                if g is None:
                    entry[role] = None
                    continue
                info = await self._info(g)
                entry[role] = {
                    "generation": g,
                    "state": info.get("state", "missing"),
                    "count": int(info.get("count") or 0),
                    "checksum": info.get("checksum", ""),
                    "created": int(info.get("created") or 0),
                    "source": info.get("source", ""),
                    "seq": int(info.get("seq") or 0),
                    "epoch": info.get("epoch", ""),
                    "adds_since_bloom": int(info.get("adds") or 0),
                }
            lists[name] = entry
        feeds: dict[str, int] = {}
        head = len(f"{p}:feed:")
        async for batch in scan_keys(self.r, f"{glob_escape(p)}:feed:*"):
            for feed_key in batch:
                feeds[_text(feed_key)[head:]] = _int(await self.r.hget(feed_key, "seq")) or 0
        first = await self.r.xrange(k_changes(p), count=1) or []
        length = int(await self.r.xlen(k_changes(p)))
        return {
            "lists": lists,
            "seq": _int(await self.r.get(k_seq(p))) or 0,
            "epoch": _text(await self.r.get(k_epoch(p))) or None,
            "stream": {"length": length, "first_id": _text(first[0][0]) if first else None},
            "feeds": feeds,
            "lock": _text(await self.r.get(k_lock(p))) or None,
        }
