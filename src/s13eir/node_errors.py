"""Errors of the composition root, importable without importing the whole node."""


class StartError(Exception):
    """The node cannot start (for instance, its lists cannot be loaded from Redis)."""
