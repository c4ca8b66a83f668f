"""How far a list load has got, for ``/readyz`` while it runs (see
:mod:`s13eir.lists.loading`). Pure: plain attributes a loading thread writes."""

from __future__ import annotations

from .snapshot import SnapshotBuilder

__all__ = ["LoadProgress"]


class LoadProgress:
    """How far a load has got: which file, how many entries so far, or indexing.

    Written by the loading thread, read by the event loop for ``/readyz``; each
    field is replaced by a single store, so a reader sees each field either before
    or after an update, and the text is for people, not for decisions.
    """

    __slots__ = ("_builder", "_entries", "_file", "_files", "_path", "_phase")

    def __init__(self, phase: str = "starting") -> None:
        self._phase = phase  # "starting", "reading", "indexing", or a free text (Redis, a shared file)
        self._files = 0
        self._file = 0
        self._path = ""
        self._builder: SnapshotBuilder | None = None
        self._entries = 0

    def begin(self, files: int, builder: SnapshotBuilder) -> None:
        """A load of ``files`` list files into ``builder`` starts."""
        self._files = files
        self._builder = builder

    def reading(self, index: int, path: str) -> None:
        """File ``index`` (0-based) is being parsed."""
        self._file = index + 1
        self._path = path
        self._phase = "reading"

    def indexing(self) -> None:
        """Every file is parsed: the entries are being sorted and indexed."""
        self._entries = self.entries()
        self._builder = None
        self._phase = "indexing"

    def set_phase(self, text: str) -> None:
        """A load that is not a parse of list files (Redis, the supervisor's shared file)."""
        self._phase = text

    def entries(self) -> int:
        """Entries parsed so far (all files together)."""
        builder = self._builder
        if builder is None:
            return self._entries
        try:
            return builder.added()
        except RuntimeError:  # the builder's tables changed while being counted
            return self._entries

    def describe(self) -> str:
        """One line for ``/readyz``, e.g. ``reading list 2 of 3 (grey.csv), 1200000 entries so far``."""
        if self._phase == "reading":
            return f"reading list {self._file} of {self._files} ({self._path}), {self.entries()} entries so far"
        if self._phase == "indexing":
            return f"indexing {self._entries} entries"
        return self._phase
