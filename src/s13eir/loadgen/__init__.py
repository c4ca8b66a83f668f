"""``s13eir load``: simulated MMEs that load-test an EIR over S13 and check every answer.

Modules: ``histogram`` (log-linear latency histogram, mergeable), ``schedule`` (open-loop
send times), ``imeis`` (what to ask and what the answer must be), ``wire`` (ECR templates
and the answer scanner), ``connection`` (one MME), ``client`` (one process's MMEs),
``procs`` (one or several processes), ``stats``, ``report``, ``echo`` (a stand-in EIR for
measuring the generator's ceiling) and ``cli`` (``add_load_parser`` / ``cmd_load``).

Import the modules themselves: this face is empty, so that ``s13eir check``, which reads
answers with ``wire``, does not pay for the load generator's imports.
"""
