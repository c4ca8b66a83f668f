"""Where the answer path leaves what detection needs: a bounded queue, O(1) per check, no
I/O and no clock. Pure.

The answer path (the S13 fast path for whitelisted phones, the reporting of every other
answer, N5g-eir) appends the raw fields; the node's detection task drains them in batches,
stamps each batch with its clock (the drain runs every 20 to 100 ms: finer than any rule's
window) and feeds the detection core. A full queue drops the check, counted, and never
delays the answer.
"""

from __future__ import annotations

from collections import deque

# (imei14, imsi, software version, IMEI as sent, the MME's Origin-Host, interface); the hot
# path leaves bytes as it scanned them: the drain decodes.
Raw = tuple[str, str | None, bytes | str | None, bytes | str | None, bytes | str, str]


class Recorder:
    __slots__ = ("_queue", "capacity", "dropped", "recorded")

    def __init__(self, capacity: int = 200_000) -> None:
        self._queue: deque[Raw] = deque()
        self.capacity = capacity
        self.recorded = 0
        self.dropped = 0

    def record(self, imei14: str, imsi: str | None, sv: bytes | str | None, imei: bytes | str | None,
               peer: bytes | str, interface: str) -> None:  # fmt: skip
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return
        self._queue.append((imei14, imsi, sv, imei, peer, interface))
        self.recorded += 1

    def take(self, limit: int) -> list[Raw]:
        q = self._queue
        n = min(limit, len(q))
        return [q.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._queue)
