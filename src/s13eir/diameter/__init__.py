"""Sans-IO Diameter base protocol (RFC 6733, RFC 3539 watchdog).

Nothing in this package performs I/O, reads a clock or draws random numbers:
bytes, the current time and a random source come in as arguments, and bytes and
events go out. The asyncio adapter lives in ``s13eir.transport``.
"""
