"""Writing the lists into Redis for every EIR node: snapshot imports into new
generations, change feeds, rollback and status (``s13eir lists ...``, ``s13eir sync``).

The key layout is :mod:`s13eir.lists.redis_layout`; see :mod:`s13eir.sync.writer`.
The names below are imported on first use (PEP 562): they bring in redis.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s13eir.sync.guards import GuardVerdict, evaluate_guards
    from s13eir.sync.redis_client import AnyRedis, connect
    from s13eir.sync.writer import (
        ImportReport,
        ListWriter,
        WriterError,
        WriterLock,
        WriterLockHeld,
        WriterLockLost,
        writer_lock,
    )

__all__ = [
    "AnyRedis",
    "GuardVerdict",
    "ImportReport",
    "ListWriter",
    "WriterError",
    "WriterLock",
    "WriterLockHeld",
    "WriterLockLost",
    "connect",
    "evaluate_guards",
    "writer_lock",
]

_LAZY = {
    "GuardVerdict": "s13eir.sync.guards",
    "evaluate_guards": "s13eir.sync.guards",
    "AnyRedis": "s13eir.sync.redis_client",
    "connect": "s13eir.sync.redis_client",
    "ImportReport": "s13eir.sync.writer",
    "ListWriter": "s13eir.sync.writer",
    "WriterError": "s13eir.sync.writer",
    "WriterLock": "s13eir.sync.writer",
    "WriterLockHeld": "s13eir.sync.writer",
    "WriterLockLost": "s13eir.sync.writer",
    "writer_lock": "s13eir.sync.writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
