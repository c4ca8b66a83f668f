"""N5g-eir (TS 29.511 EquipmentIdentityCheck) over HTTP/2, and NRF registration (TS 29.510).

The composition root needs only :func:`start_sbi`, :func:`lists_check` and
:func:`outcome_logger`; see README.md in this directory.
"""

from s13eir.sbi.n5g_eir import SbiOutcome, lists_check
from s13eir.sbi.report import outcome_logger
from s13eir.sbi.server import SbiServer, start_sbi

__all__ = ["SbiOutcome", "SbiServer", "lists_check", "outcome_logger", "start_sbi"]
