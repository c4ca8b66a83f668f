"""What the Redis-backed list store reports and shares with its change follower: its
counters, the two ways a lookup or a load fails (Redis away; a store that went back),
and the timings both go by."""

from __future__ import annotations

from dataclasses import dataclass

from ..decision.model import Facts

__all__ = ["BACKOFF_MAX_S", "FRESH_S", "RECENT_ADDS", "RECENT_S", "StoreRegressed", "StoreStats", "StoreUnavailable"]

BACKOFF_MAX_S = 1.0  # Redis back: ready (and answering from it) within about a second
FRESH_S = 2.0
# A rebuild also takes in the adds of the last RECENT_S seconds (at most RECENT_ADDS):
# a Cluster writer may not have written them yet when the scan reads their buckets.
RECENT_S = 10.0
RECENT_ADDS = 100_000


class StoreUnavailable(Exception):
    """Redis could not confirm a Bloom positive; ``last_known`` is this node's last
    confirmed answer for the same IMEI and IMSI, if any; ``positives`` the lists whose
    Bloom filters hold the IMEI (what the outage policy may go by)."""

    def __init__(self, reason: str, last_known: Facts | None, positives: frozenset[str] = frozenset()) -> None:
        super().__init__(reason)
        self.last_known = last_known
        self.positives = positives


class StoreRegressed(Exception):
    """The store is not the one this node read, or went back (see the module docstring)."""


@dataclass
class StoreStats:
    """Plain counters, read by the metrics collector at scrape time."""

    bloom_positives: int = 0
    bloom_negatives: int = 0
    remote_lookups: int = 0
    remote_empty: int = 0  # Bloom positives that Redis did not confirm: false positives
    remote_failures: int = 0
    cache_hits: int = 0
    changes_applied: int = 0
    reloads: int = 0
    follower_failures: int = 0  # the change follower hit an unexpected error and reloaded
    regressions: int = 0  # times the store was found empty, replaced or gone back
    confirm_failures: int = 0  # unexpected errors while confirming a batch (answered per policy)
