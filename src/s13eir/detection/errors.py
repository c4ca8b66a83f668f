"""A file detection reads (a trace, the TAC database) refused at one of its lines. Pure."""

from __future__ import annotations


class LineError(ValueError):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message
