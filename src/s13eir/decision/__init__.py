"""The decision domain: IMEIs, list entries, verdicts. Pure: no I/O, no Diameter."""
