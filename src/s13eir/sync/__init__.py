"""Writing the lists into Redis for every EIR node: snapshot imports into new
generations, change feeds, rollback and status (``s13eir lists ...``, ``s13eir sync``).

The key layout is :mod:`s13eir.lists.redis_layout`; see :mod:`s13eir.sync.writer`.
"""

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
