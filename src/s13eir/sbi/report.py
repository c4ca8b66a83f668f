"""The ``verdict`` log line for N5g-eir answers, shaped like the node's S13 one.

The same fields (status, rule, list, source, entry, reason, imei, imsi) let one log
query find a phone's verdicts on both interfaces; ``interface`` tells them apart and the
HTTP fields (http_status, cause, pei, supi, gpsi, client) replace the Diameter ones.
Whitelisted answers are skipped unless ``log_whitelisted``, as on S13.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from s13eir.decision.masking import mask_entry, mask_gpsi, mask_imsi, mask_supi
from s13eir.decision.model import EquipmentStatus
from s13eir.sbi.n5g_eir import SbiOutcome

__all__ = ["outcome_logger"]


def outcome_logger(
    log: FilteringBoundLogger, *, log_whitelisted: bool = False, mask: bool = False
) -> Callable[[SbiOutcome], None]:
    """An ``on_outcome`` for :func:`s13eir.sbi.server.start_sbi` that logs like S13 does."""

    def on_outcome(outcome: SbiOutcome) -> None:
        verdict = outcome.verdict
        status = verdict.status if verdict is not None else None
        if outcome.http_status == 200 and status is EquipmentStatus.WHITELISTED and not log_whitelisted:
            return
        imei = outcome.imei14
        fields: dict[str, Any] = {
            "interface": "n5g-eir",
            "http_status": outcome.http_status,
            "cause": outcome.cause or None,
            "status": status.name if status is not None else None,
            "pei": outcome.pei,
            "imei": imei,
            "imsi": mask_imsi(outcome.imsi) if mask else outcome.imsi,
            "supi": mask_supi(outcome.supi) if mask else outcome.supi,
            "gpsi": mask_gpsi(outcome.gpsi) if mask else outcome.gpsi,
            "client": outcome.client,
        }
        if verdict is not None:
            r = verdict.reason
            entry = mask_entry(r.rule.value, r.entry) if mask else r.entry
            fields.update(rule=r.rule.value, list=r.list, source=r.source, entry=entry, reason=r.detail)
        if outcome.detail:
            fields["detail"] = outcome.detail
        log.info("verdict", **fields)

    return on_outcome
