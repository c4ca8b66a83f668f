"""``s13eir load``: simulated MMEs that load-test an EIR over S13 and check every answer.

Modules: ``histogram`` (log-linear latency histogram, mergeable), ``schedule`` (open-loop
send times), ``imeis`` (what to ask and what the answer must be), ``wire`` (ECR templates
and the answer scanner), ``connection`` (one MME), ``client`` (one process's MMEs),
``procs`` (one or several processes), ``stats``, ``report``, ``echo`` (a stand-in EIR for
measuring the generator's ceiling) and ``cli`` (``add_load_parser`` / ``cmd_load``).

The names below are imported on first use (PEP 562): ``s13eir check`` reads answers with
``wire`` and must not pay for the load generator's imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cli import add_load_parser, cmd_load, load_main

__all__ = ["add_load_parser", "cmd_load", "load_main"]

_LAZY = {"add_load_parser": ".cli", "cmd_load": ".cli", "load_main": ".cli"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
