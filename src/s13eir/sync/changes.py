"""Changes to the lists' current generations (``ListWriter.apply_changes``): atomic
slices by script on a single server, or logged then applied on a Cluster, exactly once
per feed sequence number. The semantics are in ``sync/writer.py``'s docstring."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from s13eir.backends.redis_client import as_int, as_text
from s13eir.lists.redis_layout import (
    ALL_LISTS,
    LISTS,
    Change,
    change_fields,
    entry_line,
    exception_field,
    generation_record,
    imei_field,
    k_changes,
    k_current,
    k_exception_bucket,
    k_feed,
    k_imei_bucket,
    k_info,
    k_lock,
    k_meta,
    k_seq,
    parse_change,
)
from s13eir.sync.generations import Generations
from s13eir.sync.imports import EMPTY_CHECKSUM, MetaIds, h128, hex128, merge_ids, read_meta
from s13eir.sync.lock import WriterError

log = logging.getLogger("s13eir.sync.writer")

_CHANGES_PER_CALL: Final = 500


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


class ChangeApplication(Generations):
    """``apply_changes`` and ``replay_unapplied`` of the writer."""

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
        stored = as_int(await self.r.hget(k_feed(self.p, feed), "seq"))
        if feed_seq is not None and (stored is None or stored < feed_seq):
            await self.r.hset(k_feed(self.p, feed), "seq", str(feed_seq))
        return as_int(await self.r.get(k_seq(self.p))) or 0

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
            stored = as_int(await self.r.hget(k_feed(p, feed), "seq"))
            if stored is not None and stored >= feed_seq:
                return as_int(await self.r.get(k_seq(p))) or 0
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
            old_sum = as_text(await self.r.hget(info, "checksum")) or EMPTY_CHECKSUM
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
            seq, gen, what = parse_change({as_text(k): as_text(v) for k, v in (fields or {}).items()})
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
            s = as_int(await self.r.hget(k_info(p, g), "seq"))
            if s is not None and s > last_seq and not await self.r.xrange(k_changes(p), f"{s}-0", f"{s}-0"):
                await self._xadd(generation_record(s, g, name), s)
                last_seq = s
        return len(items)
