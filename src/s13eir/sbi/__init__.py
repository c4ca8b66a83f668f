"""N5g-eir (TS 29.511 EquipmentIdentityCheck) over HTTP/2, and NRF registration (TS 29.510).

The composition root needs only :func:`start_sbi`, :func:`lists_check` and
:func:`outcome_logger`; see README.md in this directory. They are imported on first use
(PEP 562), so that importing one light module of this package (``identifiers``) does not
bring in h2, httpx and JWT.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s13eir.sbi.n5g_eir import SbiOutcome, lists_check
    from s13eir.sbi.report import outcome_logger
    from s13eir.sbi.server import SbiServer, start_sbi

__all__ = ["SbiOutcome", "SbiServer", "lists_check", "outcome_logger", "start_sbi"]

_LAZY = {
    "SbiOutcome": "s13eir.sbi.n5g_eir",
    "lists_check": "s13eir.sbi.n5g_eir",
    "outcome_logger": "s13eir.sbi.report",
    "SbiServer": "s13eir.sbi.server",
    "start_sbi": "s13eir.sbi.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
