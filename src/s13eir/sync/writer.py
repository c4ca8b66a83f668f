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
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from s13eir.backends.redis_client import as_int, as_text
from s13eir.decision.model import ListKind
from s13eir.lists.formats import ListFormatError, ListSpec
from s13eir.lists.guards import GuardLimits
from s13eir.lists.redis_layout import (
    ALL_LISTS,
    RULES,
    k_bloom,
    k_changes,
    k_current,
    k_epoch,
    k_info,
    k_lock,
    k_nextgen,
    k_previous,
    k_seq,
)
from s13eir.sync.changes import ChangeApplication
from s13eir.sync.generation_scan import compare_generations, rebuild_bloom, scan_generation, scan_keys
from s13eir.sync.generations import DEFAULT_STREAM_MAXLEN
from s13eir.sync.import_report import Generation, ImportReport, decide_import
from s13eir.sync.imports import EMPTY_CHECKSUM, count_lines, glob_escape, hex128, load_generation
from s13eir.sync.lock import WriterError

__all__ = ["DEFAULT_STREAM_MAXLEN", "FORMATS_FOR_LIST", "ListWriter"]

log = logging.getLogger(__name__)

# Which file formats can make a snapshot of which list.
FORMATS_FOR_LIST: Final[Mapping[str, tuple[str, ...]]] = {
    "black": ("dirbs-blacklist", "csv"),
    "grey": ("dirbs-blacklist", "csv"),
    "white": ("dirbs-blacklist", "csv"),
    "exceptions": ("dirbs-exceptions",),
    RULES: ("rules-yaml", "tac-csv", "range-csv"),
}


class ListWriter(ChangeApplication):
    """Writes the lists into Redis for every EIR node to read. See the module docstring."""

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
        guards: GuardLimits,
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
                # The first failure is raised; the other scan's own end is collected here.
                await asyncio.gather(*scans, return_exceptions=True)
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
            current = (
                Generation(current_count, cur_info.get("checksum", ""), cur_info.get("digest", ""))
                if cur is not None and current_count is not None
                else None
            )
            status, verdicts, forced = decide_import(
                current, Generation(count, hex128(checksum), hex128(res.digest)), removals, guards, force
            )
            report = ImportReport(
                list_name=list_name, status=status, dry_run=dry_run, forced=forced,
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
                feeds[as_text(feed_key)[head:]] = as_int(await self.r.hget(feed_key, "seq")) or 0
        first = await self.r.xrange(k_changes(p), count=1) or []
        length = int(await self.r.xlen(k_changes(p)))
        return {
            "lists": lists,
            "seq": as_int(await self.r.get(k_seq(p))) or 0,
            "epoch": as_text(await self.r.get(k_epoch(p))) or None,
            "stream": {"length": length, "first_id": as_text(first[0][0]) if first else None},
            "feeds": feeds,
            "lock": as_text(await self.r.get(k_lock(p))) or None,
        }
