"""Framing golden frames fed whole, one byte at a time, and with trailing data (h11 style)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from s13eir.diameter.framing import FrameBuffer, FramingError
from s13eir.diameter.header import pack_header, parse_header


def frame(body: bytes = b"", code: int = 324, flags: int = 0xC0, hbh: int = 1, e2e: int = 2) -> bytes:
    return pack_header(20 + len(body), flags, code, 16777252, hbh, e2e) + body


GOLDEN = [frame(), frame(b"\0" * 4), frame(b"x" * 400, hbh=7)]


def drain(buf: FrameBuffer) -> list[bytes]:
    out = []
    while (f := buf.next_frame()) is not None:
        assert not isinstance(f, FramingError)
        out.append(f)
    return out


def test_whole_frames() -> None:
    for g in GOLDEN:
        buf = FrameBuffer()
        buf.feed(g)
        assert drain(buf) == [g]
        assert buf.buffered == 0


def test_one_byte_at_a_time() -> None:
    for g in GOLDEN:
        buf = FrameBuffer()
        for i in range(len(g) - 1):
            buf.feed(g[i : i + 1])
            assert buf.next_frame() is None
        buf.feed(g[-1:])
        assert drain(buf) == [g]


def test_trailing_data_stays_buffered() -> None:
    buf = FrameBuffer()
    buf.feed(GOLDEN[1] + GOLDEN[2][:30])
    assert drain(buf) == [GOLDEN[1]]
    assert buf.buffered == 30
    buf.feed(GOLDEN[2][30:])
    assert drain(buf) == [GOLDEN[2]]


@given(st.lists(st.binary(max_size=64).map(lambda b: b + b"\0" * (-len(b) % 4)), max_size=20), st.data())
def test_any_split_of_many_frames(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(b, hbh=i) for i, b in enumerate(bodies))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buf = FrameBuffer()
    got: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        buf.feed(stream[prev:c])
        prev = c
        got.extend(drain(buf))
    assert [parse_header(f).hop_by_hop for f in got] == list(range(len(bodies)))
    assert b"".join(got) == stream


def test_bad_version_waits_for_header_then_fails() -> None:
    bad = b"\x02" + frame()[1:]
    buf = FrameBuffer()
    buf.feed(bad[:10])
    assert buf.next_frame() is None  # the answer needs the whole header
    buf.feed(bad[10:])
    err = buf.next_frame()
    assert isinstance(err, FramingError) and err.result_code == 5011 and err.header == bad[:20]
    assert buf.next_frame() is err  # terminal


def test_bad_lengths() -> None:
    for length in (0, 19, 22, 70000):
        head = struct.pack("!I", 0x01000000 | length) + frame()[4:20]
        buf = FrameBuffer(max_message_size=65536)
        buf.feed(head)
        err = buf.next_frame()
        assert isinstance(err, FramingError) and err.result_code == 5015, length


def stepwise(buf: FrameBuffer, data: bytes) -> list[bytes | FramingError]:
    buf.feed(data)
    out: list[bytes | FramingError] = []
    while (f := buf.next_frame()) is not None:
        out.append(f)
        if isinstance(f, FramingError):
            break
    return out


@given(
    st.lists(st.binary(max_size=48).map(lambda b: b + b"\0" * (-len(b) % 4)), max_size=12),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)), max_size=2),
    st.data(),
)
def test_frames_is_feed_then_next_frame(
    bodies: list[bytes], damage: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    """``frames(data)`` returns what ``feed`` followed by ``next_frame`` until None (or the
    terminal error) returns, for any cut of a stream of messages, damaged or not, and
    leaves the buffer in the same state."""
    stream = bytearray(b"".join(frame(b, hbh=i) for i, b in enumerate(bodies)))
    for at, junk in damage:  # overwrite a few bytes: bad versions, lengths, whatever follows
        if stream:
            at %= len(stream)
            stream[at : at + len(junk)] = junk
    whole = bytes(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    fast, slow = FrameBuffer(max_message_size=256), FrameBuffer(max_message_size=256)
    prev = 0
    for c in [*cuts, len(whole)]:
        chunk = whole[prev:c]
        prev = c
        got, want = fast.frames(chunk), stepwise(slow, chunk)
        assert got == want
        assert fast.buffered == slow.buffered
        if want and isinstance(want[-1], FramingError):
            break
