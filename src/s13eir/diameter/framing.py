"""Splitting a TCP/SCTP byte stream into Diameter messages by the 3-byte length.

The buffer keeps an offset instead of slicing after every message, so feeding
many small messages per read costs no quadratic copying (OTP diameter_tcp does
the same for the same reason). A read that starts on a message boundary is kept
as it came, not copied, and a read holding exactly one message is that message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .header import HEADER_LENGTH

_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any further. ``header`` holds the 20 bytes of
    the offending message when they arrived, so that a 5011/5015 answer can be built."""

    result_code: int  # 5011 UNSUPPORTED_VERSION or 5015 INVALID_MESSAGE_LENGTH
    header: bytes | None
    detail: str


class FrameBuffer:
    """Accumulates bytes; ``next_frame`` returns whole messages as ``bytes``."""

    __slots__ = ("_buf", "_error", "_pos", "max_message_size")

    def __init__(self, max_message_size: int = 65536) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._error: FramingError | None = None
        self.max_message_size = max_message_size

    def feed(self, data: bytes) -> None:
        buf, pos = self._buf, self._pos
        if pos >= len(buf) and isinstance(data, bytes):
            self._buf, self._pos = data, 0  # nothing left over: no copy
            return
        if isinstance(buf, bytes):  # a partial message is left: accumulate from here on
            self._buf, self._pos = bytearray(buf[pos:]), 0
        elif pos and pos >= len(buf) // 2:
            del buf[:pos]  # compact only when the consumed part dominates
            self._pos = 0
        self._buf += data

    def frames(self, data: bytes) -> list[bytes | FramingError]:
        """``feed(data)``, then every whole message now buffered, in order, with the
        terminal framing error last if there is one: one call per read, not per message.
        A read that starts on a message boundary is walked in place; anything else (a
        partial message left from the last read) goes through ``feed``/``next_frame``."""
        if self._error is not None or self._pos < len(self._buf) or type(data) is not bytes:
            return self._slow_frames(data)
        end = len(data)
        pos = 0
        out: list[bytes | FramingError] = []
        limit = self.max_message_size
        unpack = _U32.unpack_from
        while end - pos >= 4:
            head = unpack(data, pos)[0]
            length = head & 0xFFFFFF
            if head >> 24 != 1 or length < HEADER_LENGTH or length % 4 or length > limit or end - pos < length:
                break  # an error, or a partial message: the general path takes it from here
            out.append(data if length == end else data[pos : pos + length])
            pos += length
        self._buf, self._pos = data, pos
        if pos < end:
            out.extend(self._slow_frames(b""))
        return out

    def _slow_frames(self, data: bytes) -> list[bytes | FramingError]:
        if data:
            self.feed(data)
        out: list[bytes | FramingError] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
            if isinstance(frame, FramingError):
                break
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def error(self) -> FramingError | None:
        return self._error

    def next_frame(self) -> bytes | FramingError | None:
        """A whole message, a terminal framing error, or None when more bytes are needed."""
        if self._error is not None:
            return self._error
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 4:
            return None
        head = _U32.unpack_from(buf, pos)[0]
        version, length = head >> 24, head & 0xFFFFFF
        if version != 1:
            return self._fail(5011, f"version {version}", avail)
        if length < HEADER_LENGTH or length % 4 or length > self.max_message_size:
            return self._fail(5015, f"message length {length}", avail)
        if avail < length:
            return None
        self._pos = pos + length
        if isinstance(buf, bytes):
            return buf if length == len(buf) else buf[pos : pos + length]
        return bytes(buf[pos : pos + length])

    def _fail(self, code: int, detail: str, avail: int) -> FramingError | None:
        # Wait for the rest of the header so the answer can echo its identifiers.
        if avail < HEADER_LENGTH:
            return None
        head = bytes(self._buf[self._pos : self._pos + HEADER_LENGTH])
        self._error = FramingError(code, head, detail)
        return self._error
