"""The in-memory index of all equipment lists, built once and then only read.

A reload builds a new :class:`ListSnapshot` with a :class:`SnapshotBuilder` and the
store swaps the reference; lookups in flight keep the object they started with,
so a snapshot is never modified after :meth:`SnapshotBuilder.build`.

Layout, chosen to hold ~10 million IMEIs in ~10 bytes each:

* **Single IMEIs**: one sorted ``array('q')`` of ``imei << 16 | meta``, where
  ``meta`` indexes a tuple of distinct ``(ListKind, source, detail)`` triples. A
  million rows with the same reason share one triple, so a row costs 8 bytes
  instead of the ~100+ of a ``str`` in a ``set``. The 14-digit key is < 2**47, so
  the packed value fits a signed 64-bit slot. An IMEI's entries are the keys in
  ``[imei << 16, (imei + 1) << 16)``, found with ``bisect``. More than 65,536
  distinct triples (one reason per row, say) spill into a small dict instead of
  failing the load.
* **Exception pairs**: parallel sorted arrays of IMEI, IMSI and source index; the
  IMSI is stored as ``int("1" + imsi)`` so leading zeros and length survive.
* **TAC rules**: a dict ``tac -> entries`` (a few thousand at most).
* **IMEI ranges**: sorted by first IMEI with a running maximum of the last IMEI,
  so overlapping ranges are all found by scanning back from the bisect point
  until no earlier range can reach the IMEI.
* **Bloom filter** over every IMEI of a single entry or an exception pair. Most
  lookups are for IMEIs on no list; those are answered by the filter plus a TAC
  dict probe, without touching the arrays. A positive is always confirmed against
  the arrays, so a false positive costs time, never a wrong verdict.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import chain, compress, islice, repeat

from s13eir.decision.model import NO_FACTS, Entry, ExceptionEntry, Facts, ListKind
from s13eir.lists.bloom import DEFAULT_FP_RATE, Bloom, bloom_bytes, new_bloom

__all__ = ["BloomStats", "ListSnapshot", "SnapshotBuilder"]

_META_BITS = 16
_META_MASK = (1 << _META_BITS) - 1
# The builder files keys into buckets of 2**34 consecutive IMEI keys (~5,800 over
# the 14-digit space, ~60 within a TAC prefix like 35) so build() sorts one bucket
# at a time: sorting needs a Python int per key (~48 bytes), and one bucket of them
# at a time keeps a 10M-IMEI reload from needing ~500 MB of transient memory.
_BUCKET_SHIFT = 34 + _META_BITS
_IMSI_BITS = 51  # int("1" + 15 digits) < 2 * 10**15 < 2**51
_MIN_IMSI_LEN = 5  # MCC (3) + MNC (2) at the very least; TS 23.003 allows up to 15
_MAX_IMSI_LEN = 15
# Rough cost of one TAC/range/meta entry (tuple, Entry, key string); only for the
# log line, the arrays and the filter dominate.
_SMALL_ENTRY_BYTES = 200
# build() hands its bulk passes (deduplication, per-list counts, the Bloom filter) this
# many keys at a time: each pass is one C call that keeps the interpreter to itself, and
# between chunks another thread (the event loop, while a node loads or reloads its lists
# in a thread) gets its turn. 2**16 keys take a few milliseconds a pass.
_BUILD_CHUNK = 1 << 16

_Meta = tuple[ListKind, str, str]  # (list, source, detail)


def _check_imei14(imei14: str) -> int:
    if len(imei14) != 14 or not (imei14.isascii() and imei14.isdigit()):
        raise ValueError(f"IMEI key must be 14 ASCII digits, got {imei14!r}")
    return int(imei14)


def _imsi_key(imsi: str) -> int | None:
    """The stored form of an IMSI, or None if it is not 5-15 ASCII digits.

    Checked explicitly because ``int()`` also accepts ``_``, whitespace and
    non-ASCII digits, which must not let a malformed IMSI match a pair.
    """
    if _MIN_IMSI_LEN <= len(imsi) <= _MAX_IMSI_LEN and imsi.isascii() and imsi.isdigit():
        return int("1" + imsi)
    return None


@dataclass(slots=True)
class BloomStats:
    """Bloom filter outcomes since the snapshot was built; plain ints, cheap to read."""

    positives: int = 0
    negatives: int = 0
    false_positives: int = 0  # positives for an IMEI that is on no single-IMEI or exception entry


class ListSnapshot:
    """An immutable index of every list; see the module docstring for the layout."""

    __slots__ = (
        "_bloom",
        "_counts",
        "_exc_imei",
        "_exc_imsi",
        "_exc_sources",
        "_exc_src",
        "_keys",
        "_metas",
        "_overflow",
        "_range_entries",
        "_range_first",
        "_range_last",
        "_range_reach",
        "_tac",
        "stats",
    )

    def __init__(
        self,
        *,
        keys: array[int],
        metas: tuple[_Meta, ...],
        overflow: dict[int, tuple[int, ...]],
        exc_imei: array[int],
        exc_imsi: array[int],
        exc_src: array[int],
        exc_sources: tuple[str, ...],
        tac: dict[str, tuple[Entry, ...]],
        ranges: list[tuple[int, int, Entry]],
        bloom: Bloom,
        counts: dict[str, int],
    ) -> None:
        """Use :class:`SnapshotBuilder`; this takes already sorted, deduplicated data."""
        self._keys = keys
        self._metas = metas
        self._overflow = overflow
        self._exc_imei = exc_imei
        self._exc_imsi = exc_imsi
        self._exc_src = exc_src
        self._exc_sources = exc_sources
        self._tac = tac
        ranges = sorted(ranges, key=operator.itemgetter(0))
        self._range_first = array("q", (r[0] for r in ranges))
        self._range_last = array("q", (r[1] for r in ranges))
        reach: list[int] = []
        for _, last, _ in ranges:
            reach.append(max(last, reach[-1]) if reach else last)
        self._range_reach = array("q", reach)
        self._range_entries = tuple(r[2] for r in ranges)
        self._bloom = bloom
        self._counts = counts
        self.stats = BloomStats()

    @classmethod
    def empty(cls) -> ListSnapshot:
        """A snapshot with no lists (every IMEI falls to the unknown-IMEI policy)."""
        return SnapshotBuilder().build()

    # -- lookups ---------------------------------------------------------------

    def facts(self, imei14: str, imsi: str | None = None) -> Facts:
        """Everything listed for ``imei14`` (a normalised 14-digit key) and ``imsi``.

        The IMEI must come from :func:`s13eir.decision.imei.normalize_imei` or a
        sibling: it is converted with ``int()`` without further checks, since this
        runs for every request. Returns the shared ``NO_FACTS`` when nothing matches.
        """
        n = int(imei14)
        if n in self._bloom:
            return self._confirmed(n, imei14, imsi)
        self.stats.negatives += 1
        tac = self._tac.get(imei14[:8], ())
        if self._range_first:
            rng = self._ranges_for(n)
            if tac or rng:
                return Facts(range=rng, tac=tac)
        elif tac:
            return Facts(tac=tac)
        return NO_FACTS

    def _confirmed(self, n: int, imei14: str, imsi: str | None) -> Facts:
        """The Bloom-positive path: consult the exact index."""
        self.stats.positives += 1
        entries = self._imei_entries(n, imei14)
        exception: ExceptionEntry | None = None
        known = bool(entries)
        exc_imei = self._exc_imei
        if exc_imei:
            j = bisect_left(exc_imei, n)
            end = len(exc_imei)
            if j < end and exc_imei[j] == n:
                known = True
                if imsi is not None and (key := _imsi_key(imsi)) is not None:
                    exc_imsi = self._exc_imsi
                    # An IMEI has a handful of pairs at most: scan them.
                    while j < end and exc_imei[j] == n:
                        if exc_imsi[j] == key:
                            source = self._exc_sources[self._exc_src[j]]
                            exception = ExceptionEntry(imei=imei14, imsi=imsi, source=source)
                            break
                        j += 1
        if not known:
            self.stats.false_positives += 1
        tac = self._tac.get(imei14[:8], ())
        rng = self._ranges_for(n) if self._range_first else ()
        if exception is None and not entries and not tac and not rng:
            return NO_FACTS
        return Facts(exception=exception, imei=entries, range=rng, tac=tac)

    def _imei_entries(self, n: int, imei14: str) -> tuple[Entry, ...]:
        keys = self._keys
        lo = n << _META_BITS
        hi = lo + (1 << _META_BITS)
        i = bisect_left(keys, lo)
        end = len(keys)
        metas = self._metas
        out: list[Entry] = []
        while i < end and keys[i] < hi:
            kind, source, detail = metas[keys[i] & _META_MASK]
            out.append(Entry(list=kind, source=source, key=imei14, detail=detail))
            i += 1
        if self._overflow:
            for idx in self._overflow.get(n, ()):
                kind, source, detail = metas[idx]
                out.append(Entry(list=kind, source=source, key=imei14, detail=detail))
        return tuple(out)

    def _ranges_for(self, n: int) -> tuple[Entry, ...]:
        j = bisect_right(self._range_first, n) - 1
        reach = self._range_reach
        last = self._range_last
        out: list[Entry] = []
        # reach[j] is the highest last IMEI among ranges 0..j: once it is below n,
        # no earlier range can contain n.
        while j >= 0 and reach[j] >= n:
            if last[j] >= n:
                out.append(self._range_entries[j])
            j -= 1
        out.reverse()
        return tuple(out)

    # -- reporting -------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Entries per kind: black, grey, white (single IMEIs), exceptions, tac, ranges."""
        return dict(self._counts)

    def memory_bytes(self) -> int:
        """Approximate memory held by the index: arrays, filter, small structures."""
        arrays = (
            self._keys,
            self._exc_imei,
            self._exc_imsi,
            self._exc_src,
            self._range_first,
            self._range_last,
            self._range_reach,
        )
        total = sum(len(a) * a.itemsize for a in arrays)  # arrays or (mapped) memoryviews
        total += bloom_bytes(self._bloom)
        small = len(self._metas) + sum(len(v) for v in self._overflow.values())
        small += self._counts["tac"] + self._counts["ranges"]
        return total + small * _SMALL_ENTRY_BYTES


class SnapshotBuilder:
    """Collects list rows, then builds a :class:`ListSnapshot`.

    Rows are appended to flat arrays (8 bytes each), so building from a 10M-row
    file does not keep a Python object per row. Duplicate
    rows are harmless: :meth:`build` removes them. A builder is used once; on a
    parse error the caller just drops it, leaving the live snapshot untouched.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, array[int]] = {}
        self._metas: list[_Meta] = []
        self._meta_index: dict[_Meta, int] = {}
        self._overflow: dict[int, set[int]] = {}
        self._exc_imei: array[int] = array("q")
        self._exc_imsi: array[int] = array("q")
        self._exc_src: array[int] = array("I")
        self._exc_sources: list[str] = []
        self._exc_source_index: dict[str, int] = {}
        self._tac: dict[str, dict[_Meta, None]] = {}
        self._ranges: dict[tuple[int, int, ListKind, str, str], None] = {}
        self._built = False

    def added(self) -> int:
        """Rows added so far (duplicates included); cheap, and callable from another
        thread while this one adds (it reads lengths only). Raises RuntimeError in
        the unlikely case that the bucket table grows while it is being read."""
        buckets = sum(map(len, tuple(self._buckets.values())))
        overflow = sum(map(len, tuple(self._overflow.values())))
        tac = sum(map(len, tuple(self._tac.values())))
        return buckets + overflow + tac + len(self._exc_imei) + len(self._ranges)

    def _meta(self, kind: ListKind, source: str, detail: str) -> int:
        meta = (kind, source, detail)
        idx = self._meta_index.get(meta)
        if idx is None:
            idx = self._meta_index[meta] = len(self._metas)
            self._metas.append(meta)
        return idx

    def _check_open(self) -> None:
        if self._built:
            raise RuntimeError("SnapshotBuilder.build() was already called")

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        """One IMEI (14-digit key) on ``kind``."""
        self._check_open()
        n = _check_imei14(imei14)
        idx = self._meta(kind, source, detail)
        if idx <= _META_MASK:
            key = n << _META_BITS | idx
            bucket = self._buckets.get(key >> _BUCKET_SHIFT)
            if bucket is None:
                bucket = self._buckets[key >> _BUCKET_SHIFT] = array("q")
            bucket.append(key)
        else:
            self._overflow.setdefault(n, set()).add(idx)

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        """An IMEI+IMSI pair that whitelists that subscriber's use of the IMEI."""
        self._check_open()
        n = _check_imei14(imei14)
        key = _imsi_key(imsi)
        if key is None:
            raise ValueError(f"IMSI must be 5-15 ASCII digits, got {imsi!r}")
        src = self._exc_source_index.get(source)
        if src is None:
            src = self._exc_source_index[source] = len(self._exc_sources)
            self._exc_sources.append(source)
        self._exc_imei.append(n)
        self._exc_imsi.append(key)
        self._exc_src.append(src)

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        """Every IMEI of a Type Allocation Code (8 digits) on ``kind``."""
        self._check_open()
        if len(tac8) != 8 or not (tac8.isascii() and tac8.isdigit()):
            raise ValueError(f"TAC must be 8 ASCII digits, got {tac8!r}")
        self._tac.setdefault(tac8, {})[(kind, source, detail)] = None

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        """Every IMEI key from ``first14`` to ``last14`` inclusive on ``kind``."""
        self._check_open()
        first, last = _check_imei14(first14), _check_imei14(last14)
        if first > last:
            raise ValueError(f"range {first14}-{last14} is empty (first > last)")
        self._ranges[(first, last, kind, source, detail)] = None

    def build(self, bloom_fp_rate: float = DEFAULT_FP_RATE) -> ListSnapshot:
        """Sort, deduplicate and index everything added; the builder is spent after this."""
        self._check_open()
        self._built = True
        # Buckets cover disjoint, increasing key ranges: sorting each and
        # concatenating them in bucket order sorts everything. compress() drops
        # adjacent duplicates at C speed, a chunk at a time.
        keys: array[int] = array("q")
        for bucket_id in sorted(self._buckets):
            ordered = sorted(self._buckets.pop(bucket_id))
            for start in range(0, len(ordered), _BUILD_CHUNK):
                chunk = ordered[start : start + _BUILD_CHUNK]
                first = start == 0 or ordered[start - 1] != chunk[0]
                keys.extend(compress(chunk, chain((first,), map(operator.ne, islice(chunk, 1, None), chunk))))
            del ordered

        per_meta: Counter[int] = Counter()
        for start in range(0, len(keys), _BUILD_CHUNK):
            per_meta.update(map(operator.and_, keys[start : start + _BUILD_CHUNK], repeat(_META_MASK)))
        overflow = {n: tuple(sorted(idxs)) for n, idxs in self._overflow.items()}
        for idxs in overflow.values():
            per_meta.update(idxs)
        metas = tuple(self._metas)
        per_kind = dict.fromkeys(ListKind, 0)
        for idx, count in per_meta.items():
            per_kind[metas[idx][0]] += count

        exc_imei, exc_imsi, exc_src = self._build_exceptions()

        tac = {
            t: tuple(Entry(list=k, source=s, key=t, detail=d) for (k, s, d) in metas_)
            for t, metas_ in self._tac.items()
        }
        ranges = [
            (first, last, Entry(list=k, source=s, key=f"{first:014d}-{last:014d}", detail=d))
            for (first, last, k, s, d) in self._ranges
        ]

        bloom = new_bloom(len(keys) + len(overflow) + len(exc_imei), bloom_fp_rate, chain(overflow, exc_imei))
        for start in range(0, len(keys), _BUILD_CHUNK):
            bloom.update(map(operator.rshift, keys[start : start + _BUILD_CHUNK], repeat(_META_BITS)))

        counts = {
            "black": per_kind[ListKind.BLACK],
            "grey": per_kind[ListKind.GREY],
            "white": per_kind[ListKind.WHITE],
            "exceptions": len(exc_imei),
            "tac": sum(len(v) for v in tac.values()),
            "ranges": len(ranges),
        }
        return ListSnapshot(
            keys=keys,
            metas=metas,
            overflow=overflow,
            exc_imei=exc_imei,
            exc_imsi=exc_imsi,
            exc_src=exc_src,
            exc_sources=tuple(self._exc_sources),
            tac=tac,
            ranges=ranges,
            bloom=bloom,
            counts=counts,
        )

    def _build_exceptions(self) -> tuple[array[int], array[int], array[int]]:
        """Exception pairs sorted by (IMEI, IMSI); a pair listed twice keeps its first source."""
        src_bits = max(1, (len(self._exc_sources) - 1).bit_length())
        combined = sorted(
            {
                ((imei << _IMSI_BITS | imsi) << src_bits) | src
                for imei, imsi, src in zip(self._exc_imei, self._exc_imsi, self._exc_src, strict=True)
            }
        )
        self._exc_imei, self._exc_imsi, self._exc_src = array("q"), array("q"), array("I")
        exc_imei: array[int] = array("q")
        exc_imsi: array[int] = array("q")
        exc_src: array[int] = array("I")
        src_mask = (1 << src_bits) - 1
        imsi_mask = (1 << _IMSI_BITS) - 1
        previous = -1
        for value in combined:
            pair = value >> src_bits
            if pair == previous:
                continue  # same pair from a later source
            previous = pair
            exc_imei.append(pair >> _IMSI_BITS)
            exc_imsi.append(pair & imsi_mask)
            exc_src.append(value & src_mask)
        return exc_imei, exc_imsi, exc_src
