"""The import guards of ``s13eir lists import`` applied to a reload of embedded list files.

A header-only or truncated file must not empty a blacklist on SIGHUP any more than a
truncated feed may empty it in Redis. Each kind (black, grey, white, exceptions, tac,
ranges) is compared with the lists in force by ``sync.guards``: the size change, and as
removals the shrinkage (a lower bound of the entries removed: the embedded index is
compared by counts, so a file that swaps entries at the same size is not caught).
"""

from __future__ import annotations

from collections.abc import Mapping

from s13eir.lists.guards import GuardLimits, evaluate_guards

__all__ = ["reload_refusals"]


def reload_refusals(current: Mapping[str, int], new: Mapping[str, int], cfg: GuardLimits) -> list[str]:
    """Why replacing lists of ``current`` counts by ``new`` ones is refused ([] = allowed)."""
    out = []
    for kind in sorted(set(current) | set(new)):
        cur, n = current.get(kind, 0), new.get(kind, 0)
        for verdict in evaluate_guards(cur, n, max(0, cur - n), cfg):
            if not verdict.ok:
                out.append(f"{kind}: {verdict}")
    return out
