"""The decision of a snapshot import, without Redis (sync/import_report.py): unchanged,
refused by a guard unless forced, or imported."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s13eir.config import GuardsConfig
from s13eir.sync.import_report import Generation, decide_import

GUARDS = GuardsConfig(max_size_change=0.10, max_removals=0.05, min_entries_to_guard=100)


def gen(count: int, checksum: str = "c", digest: str = "d") -> Generation:
    return Generation(count, checksum, digest)


def test_the_first_import_of_a_list_is_not_guarded() -> None:
    assert decide_import(None, gen(5), 0, GUARDS, False) == ("imported", [], False)


def test_the_same_entries_and_metadata_are_unchanged() -> None:
    status, verdicts, forced = decide_import(gen(1000), gen(1000), 0, GUARDS, True)
    assert (status, forced) == ("unchanged", False) and all(v.ok for v in verdicts)
    # New reasons or sources (the digest) for the same entries are an import.
    assert decide_import(gen(1000), gen(1000, digest="other"), 0, GUARDS, False)[0] == "imported"


def test_a_big_change_is_refused_unless_forced() -> None:
    status, verdicts, forced = decide_import(gen(1000), gen(500, "x"), 500, GUARDS, False)
    assert status == "refused" and not forced
    assert [v.name for v in verdicts if not v.ok] == ["size", "removals"]
    assert decide_import(gen(1000), gen(500, "x"), 500, GUARDS, True)[::2] == ("imported", True)
    # Same size, but many entries swapped: the removals guard alone.
    status, verdicts, _ = decide_import(gen(1000), gen(1000, "x"), 100, GUARDS, False)
    assert status == "refused" and [v.name for v in verdicts if not v.ok] == ["removals"]


def test_a_small_list_changes_freely() -> None:
    assert decide_import(gen(50), gen(1, "x"), 49, GUARDS, False)[0] == "imported"


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.data(), st.booleans())
def test_refused_exactly_when_a_guard_fails_and_not_forced(cur: int, new: int, data: st.DataObject,
                                                            force: bool) -> None:  # fmt: skip
    removals = data.draw(st.integers(0, cur))
    status, verdicts, forced = decide_import(gen(cur), gen(new, "x"), removals, GUARDS, force)
    failed = any(not v.ok for v in verdicts)
    assert status == ("refused" if failed and not force else "imported")
    assert forced == (failed and force)
