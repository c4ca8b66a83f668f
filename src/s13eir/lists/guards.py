"""Import guards: refuse a snapshot that changes a list too much.

A truncated export, a wrong file or a feed that lost half its rows looks, to an
importer, just like a big legitimate change; the guards make such an import an
explicit decision (``--force``) instead of something that unblocks or blocks
millions of phones on its own. They compare the new generation with the list's
current one, both counted in Redis after the new one was written and verified:

``size``
    ``|new - current| / current``: the relative change in the number of entries.
``removals``
    ``removed / current``, where ``removed`` counts the current generation's
    entries absent from the new one. Checked separately because a feed that swaps
    many entries keeps its size while changing the verdict of many phones.

A list with fewer than ``min_entries_to_guard`` entries changes freely (the
verdicts are still reported). A list with no current generation has nothing to
compare with: its first import is not guarded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["GuardLimits", "GuardVerdict", "evaluate_guards", "refused"]


class GuardLimits(Protocol):
    """The three numbers the guards compare with (``sync.guards`` in the configuration)."""

    @property
    def max_size_change(self) -> float: ...
    @property
    def max_removals(self) -> float: ...
    @property
    def min_entries_to_guard(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    name: str  # "size" | "removals"
    value: float  # the measured share (inf when the current generation is empty)
    limit: float
    ok: bool
    detail: str

    def __str__(self) -> str:
        mark = "ok" if self.ok else "REFUSED"
        return f"{self.name}: {self.detail} ({mark})"


def _share(part: int, whole: int) -> float:
    if whole:
        return part / whole
    return 0.0 if part == 0 else math.inf


def evaluate_guards(current_count: int | None, new_count: int, removals: int, cfg: GuardLimits) -> list[GuardVerdict]:
    """The verdicts for replacing a list of ``current_count`` entries (None: no current
    generation) by one of ``new_count``, of which ``removals`` entries disappear."""
    if current_count is None:
        return []
    small = current_count < cfg.min_entries_to_guard
    size = _share(abs(new_count - current_count), current_count)
    removed = _share(removals, current_count)
    note = f"; below min_entries_to_guard {cfg.min_entries_to_guard}, not enforced" if small else ""
    return [
        GuardVerdict(
            "size",
            size,
            cfg.max_size_change,
            small or size <= cfg.max_size_change,
            f"{current_count} -> {new_count} entries, change {size:.2%} (limit {cfg.max_size_change:.2%}){note}",
        ),
        GuardVerdict(
            "removals",
            removed,
            cfg.max_removals,
            small or removed <= cfg.max_removals,
            f"{removals} of {current_count} entries removed, {removed:.2%} (limit {cfg.max_removals:.2%}){note}",
        ),
    ]


def refused(verdicts: Sequence[GuardVerdict]) -> bool:
    return any(not v.ok for v in verdicts)
