"""``s13eir load``: simulated MMEs that load-test an EIR over S13 and check every answer.

Modules: ``histogram`` (log-linear latency histogram, mergeable), ``schedule`` (open-loop
send times), ``imeis`` (what to ask and what the answer must be), ``wire`` (ECR templates
and the answer scanner), ``connection`` (one MME), ``client`` (one process's MMEs),
``procs`` (one or several processes), ``stats``, ``report``, ``echo`` (a stand-in EIR for
measuring the generator's ceiling) and ``cli`` (``add_load_parser`` / ``cmd_load``).
"""

from __future__ import annotations

from .cli import add_load_parser, cmd_load, load_main

__all__ = ["add_load_parser", "cmd_load", "load_main"]
