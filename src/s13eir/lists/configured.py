"""The embedded lists a configuration names (``store.lists``), loaded into a snapshot: what
``s13eir serve`` loads at start-up and on SIGHUP, what the ``serve --workers``
supervisor shares with its workers, and what ``s13eir config check`` reads."""

from __future__ import annotations

from s13eir.config import Config
from s13eir.lists.formats import ListSpec, load_lists
from s13eir.lists.progress import LoadProgress
from s13eir.lists.snapshot import ListSnapshot

__all__ = ["list_specs", "load_snapshot"]


def list_specs(config: Config) -> list[ListSpec]:
    return [ListSpec(s.path, s.format, s.list) for s in config.store.lists]


def load_snapshot(config: Config, progress: LoadProgress | None = None) -> ListSnapshot:
    """Parse every configured list file into a new snapshot (raises ListFormatError).

    ``progress`` follows the load, for another thread to report (``/readyz``).
    """
    return load_lists(list_specs(config), config.store.bloom_fp_rate, progress)
