"""A snapshot written to a file and mapped back answers exactly like the original."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from s13eir.decision.engine import decide
from s13eir.decision.model import ListKind, UnknownPolicy
from s13eir.lists.mmap_snapshot import load_mapped, save_snapshot
from s13eir.lists.snapshot import SnapshotBuilder
from tests.s13.test_fastpath import SNAPSHOT

imeis = st.integers(35_000_000_000_000, 35_000_000_009_999).map(str)


def test_sample_lists_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "lists.snap"
    save_snapshot(SNAPSHOT, path)
    mapped = load_mapped(path)
    assert mapped.counts() == SNAPSHOT.counts()
    for imei in ("35209900176148", "35290611000001", "86000012345670", "35698700001234", "35450712345675"):
        for imsi in (None, "001010000000001"):
            assert mapped.facts(imei, imsi) == SNAPSHOT.facts(imei, imsi)


@settings(max_examples=25)
@given(
    rows=st.lists(st.tuples(imeis, st.sampled_from(list(ListKind)), st.sampled_from(["a", "b"])), max_size=60),
    pairs=st.lists(st.tuples(imeis, st.sampled_from(["001010000000001", "00101999"])), max_size=10),
    queries=st.lists(st.tuples(imeis, st.sampled_from([None, "001010000000001"])), min_size=1, max_size=30),
)
def test_mapped_equals_built(
    tmp_path_factory: object, rows: list[tuple[str, ListKind, str]], pairs: list[tuple[str, str]],
    queries: list[tuple[str, str | None]],
) -> None:  # fmt: skip
    b = SnapshotBuilder()
    for imei, kind, reason in rows:
        b.add_imei(imei, kind, "src", reason)
    for imei, imsi in pairs:
        b.add_exception(imei, imsi, "exc")
    snap = b.build()
    path = tmp_path_factory.mktemp("snap") / "lists.snap"  # type: ignore[attr-defined]
    save_snapshot(snap, path)
    mapped = load_mapped(path)
    for imei, imsi in queries:
        want = decide(snap.facts(imei, imsi), imsi, UnknownPolicy.UNKNOWN, imei)
        assert decide(mapped.facts(imei, imsi), imsi, UnknownPolicy.UNKNOWN, imei) == want
