"""asyncio adapters around the sans-IO Diameter core. The only I/O in the Diameter path."""
