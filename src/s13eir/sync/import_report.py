"""What an import of a list snapshot decides, once the new generation is written and
verified: unchanged (same entries as the current one), refused (the guards, unless
forced) or imported; and the report of it. Pure: the writer (``sync/writer.py``) does the
Redis work and hands the counts and checksums over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from s13eir.lists.guards import GuardLimits, GuardVerdict, evaluate_guards, refused

__all__ = ["Generation", "ImportReport", "ImportStatus", "decide_import"]


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


@dataclass(frozen=True, slots=True)
class Generation:
    """A generation as the decision sees it: its entries, their checksum (the XOR of
    their hashes) and its digest (of its metadata: reasons and sources)."""

    count: int
    checksum: str
    digest: str


def decide_import(
    current: Generation | None, new: Generation, removals: int, guards: GuardLimits, force: bool
) -> tuple[ImportStatus, list[GuardVerdict], bool]:
    """(status, the guards' verdicts, whether ``force`` overrode a refusal) for replacing
    ``current`` (None: the list has no generation yet) by ``new``, of whose entries
    ``removals`` of the current one's are absent."""
    if current == new:
        return "unchanged", evaluate_guards(current.count, new.count, removals, guards), False
    verdicts = evaluate_guards(current.count if current is not None else None, new.count, removals, guards)
    if refused(verdicts):
        return ("imported", verdicts, True) if force else ("refused", verdicts, False)
    return "imported", verdicts, False
