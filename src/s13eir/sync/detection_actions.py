"""The list changes detection asks for, applied by the one writer (``s13eir sync``) and
audited.

A node whose finding's rule has the action ``greylist`` or ``block`` records the change
on the IMEI's case and appends it to ``P:det:actions`` (:mod:`s13eir.detection_shared`):
the IMEI added to the greylist or the blacklist with ``detection:<rule>`` as its source
and the finding as its reason, and for a clone the exception pair of the IMSI judged
genuine. ``s13eir cases undo`` appends the matching removals. This task reads the stream
in order, from the last entry it finished (``P:det:actions:done``), and for each one:

* refuses what detection may not do: a source that is not ``detection:<rule>``, or a
  change the writer would refuse (logged, audited as ``refused``);
* adds an exception pair only where none is (an operator's pair is never taken over,
  so that undoing never removes it: ``present``);
* removes only detection's own entry: a removal names the same source and reason, and
  the writer drops only that entry's record, not a CEIR's or an operator's for the same
  IMEI;
* applies it through the writer (``apply_changes``: logged in ``P:changes``, so every
  node applies it), appends an audit record to ``P:audit`` (when, who, what, outcome),
  and sets the change's state on the case.

Each change is idempotent, so a crash between applying one and storing its stream id
applies it again harmlessly. Applied requests are trimmed from the stream (they are in
the audit stream and on the cases); ``P:audit`` itself is never trimmed here.
"""

from __future__ import annotations

import time
from typing import Any

from s13eir.backends.redis_client import AnyRedis, as_text
from s13eir.detection.detector import Detector
from s13eir.detection.rules import DetectionConfig
from s13eir.detection_shared import SharedDetection, actions_key
from s13eir.lists.redis_layout import Change, exception_field, k_current, k_exception_bucket
from s13eir.observability.logs import get_logger

from .writer import ListWriter

__all__ = ["DetectionActions", "k_audit"]

_LISTS = ("black", "grey", "exceptions")


def k_audit(p: str) -> str:
    """Every list change detection made or undid: ``at``, ``by``, ``op``, ``list``,
    ``imei``, ``imsi``, ``source``, ``reason``, ``outcome``."""
    return f"{p}:audit"


class DetectionActions:
    def __init__(self, redis: AnyRedis, prefix: str, writer: ListWriter, block_ms: int = 1000) -> None:
        self.redis = redis
        self.prefix = prefix
        self.writer = writer
        self.block_ms = block_ms
        self.stream = actions_key(prefix)
        self.done_key = f"{prefix}:det:actions:done"
        self.cases = SharedDetection(redis, prefix, Detector(DetectionConfig(), {}))
        self.outcomes: dict[str, int] = {}
        self.log = get_logger("s13eir.sync")

    async def run(self) -> None:
        """Apply the stream until cancelled (supervised: a failure is restarted)."""
        r: Any = self.redis
        last = as_text(await r.get(self.done_key)) or "0-0"
        while True:
            replies = await r.xread({self.stream: last}, count=100, block=self.block_ms)
            for _, entries in replies or []:
                for entry_id, raw in entries:
                    fields = {as_text(k): as_text(v) for k, v in raw.items()}
                    await self.apply(fields)
                    last = as_text(entry_id)
                    await r.set(self.done_key, last)
                # What is applied is in P:audit and on the cases: the stream keeps only the rest.
                await r.xdel(self.stream, *[entry_id for entry_id, _ in entries])

    async def apply(self, f: dict[str, str]) -> str:
        """Apply one requested change; its outcome (applied, undone, present, refused)."""
        op, list_name, imei, imsi = f.get("op", ""), f.get("list", ""), f.get("imei", ""), f.get("imsi", "")
        source, reason = f.get("source", ""), f.get("reason", "")
        outcome, why = "", ""
        if not source.startswith("detection:") or list_name not in _LISTS or op not in ("add", "remove"):
            outcome, why = "refused", "not a change detection may make"
        elif op == "add" and list_name == "exceptions" and await self._pair_exists(imei, imsi):
            outcome = "present"
        else:
            try:
                await self.writer.apply_changes([Change(op, list_name, imei, imsi, reason, source)])  # type: ignore[arg-type]
                outcome = "applied" if op == "add" else "undone"
            except ValueError as exc:  # the writer's checks of a change
                outcome, why = "refused", str(exc)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        record = {"at": f"{time.time():.3f}", "by": f.get("by", ""), "op": op, "list": list_name, "imei": imei,
                  "imsi": imsi, "source": source, "reason": reason, "outcome": outcome, "why": why}  # fmt: skip
        r: Any = self.redis
        await r.xadd(k_audit(self.prefix), record)
        log = self.log.warning if outcome == "refused" else self.log.info
        log("detection_list_change", **record)
        if outcome != "refused" and len(imei) == 14 and imei.isdigit():
            await self.cases.set_action_state(imei, list_name, imsi, outcome)
        return outcome

    async def _pair_exists(self, imei: str, imsi: str) -> bool:
        r: Any = self.redis
        gen = as_text(await r.hget(k_current(self.prefix), "exceptions"))
        if not gen or not (len(imei) == 14 and imei.isdigit()):
            return False
        n = int(imei)
        return bool(await r.hexists(k_exception_bucket(self.prefix, int(gen), n), exception_field(n, imsi)))
