"""The MQTT change-set message: the contract with the master list's publisher. Pure.

One MQTT message carries one change set, a JSON object (UTF-8)::

    {"seq": 42,
     "feed": "ceir",                          # optional; when present, must be the configured feed
     "sent_at": "2024-05-01T12:00:00Z",       # optional RFC 3339 timestamp, for lag reporting
     "changes": [
       {"op": "add", "list": "black", "imei": "35209900176148", "reason": "stolen"},
       {"op": "remove", "list": "grey", "imei": "35209900176149"},
       {"op": "add", "list": "exceptions", "imei": "35209900176148", "imsi": "001010123456789"}]}

Decisions (documented for the publisher in ``config/mqtt-deltas.md``):

* ``seq`` is an integer >= 1, one more than the previous message of the same feed.
* ``changes`` may be empty (a message that only advances ``seq``); at most
  :data:`MAX_CHANGES` per message. They are applied in array order.
* Unknown fields are refused, at the top level and in every change: the schema is a
  contract, and a misspelt key (``"imsi "``, ``"reasons"``) must not be silently
  dropped. A publisher adding a field must wait until every consumer knows it.
* ``imei`` is a JSON string of 14-16 ASCII digits (14 = TAC+SNR, 15 with the check
  digit, 16 an IMEISV), surrounding blanks tolerated as in list files; it is kept as
  its first 14 digits. A JSON number is refused: it would lose a leading zero.
* ``imsi`` is a string of 5-15 digits, required for the exceptions list and refused
  for the others.
* ``reason`` is free text (at most :data:`MAX_TEXT`). ``source`` names where the
  entry came from (non-empty, no control characters). An ``add`` without a source is
  the feed's (source = the feed name). A ``remove`` without a source takes the entry
  off the list whatever its sources and reasons (including an entry that came with a
  snapshot file); with a source, only that source's reasons go (and only ``reason``
  when one is given), the entry when none is left (``ListWriter`` semantics).
* One bad change rejects the whole message, never part of it: :func:`parse_changeset`
  either returns every change or raises :class:`ChangeSetError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

import msgspec

from s13eir.decision.imei import normalize_list_imei
from s13eir.lists.redis_layout import Change, ListName, Op

__all__ = [
    "MAX_CHANGES",
    "MAX_SEQ",
    "MAX_TEXT",
    "ChangeSet",
    "ChangeSetError",
    "encode_changeset",
    "parse_changeset",
]

MAX_CHANGES: Final = 100_000
MAX_SEQ: Final = 2**63 - 1  # a Redis integer
MAX_TEXT: Final = 1024

_Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class _ChangeMsg(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    op: Op
    list: ListName
    imei: str
    imsi: str | None = None
    reason: _Text = ""
    source: _Text | None = None


class _ChangeSetMsg(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    seq: _Seq
    changes: Annotated[list[_ChangeMsg], msgspec.Meta(max_length=MAX_CHANGES)]
    feed: str | None = None
    sent_at: datetime | None = None


_decoder: Final = msgspec.json.Decoder(_ChangeSetMsg)
_encoder: Final = msgspec.json.Encoder()


class ChangeSetError(ValueError):
    """A message that cannot be applied; ``reason`` says why, ``seq`` is its sequence
    number when it could be read (None otherwise)."""

    def __init__(self, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """A validated change set: every change is ready for ``ListWriter.apply_changes``."""

    seq: int
    changes: tuple[Change, ...]
    sent_at: datetime | None = None


def _digits(value: str, low: int, high: int) -> bool:
    return low <= len(value) <= high and value.isascii() and value.isdigit()


def _control_free(value: str) -> bool:
    return not any(ch < " " or ch == "\x7f" for ch in value)


def _seq_hint(payload: bytes | str) -> int | None:
    """The ``seq`` of a message refused for another reason, for the log line."""
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, dict):
        seq = raw.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


def _change(i: int, c: _ChangeMsg, feed: str) -> Change:
    where = f"changes[{i}]"
    imei = normalize_list_imei(c.imei)
    if imei is None:
        raise ValueError(f"{where}.imei: {c.imei!r} is not 14-16 digits")
    if c.list == "exceptions":
        if c.imsi is None:
            raise ValueError(f"{where}.imsi: required for the exceptions list")
        if not _digits(c.imsi, 5, 15):
            raise ValueError(f"{where}.imsi: {c.imsi!r} is not 5-15 digits")
    elif c.imsi is not None:
        raise ValueError(f"{where}.imsi: only the exceptions list takes an IMSI, not {c.list}")
    if c.source is None:
        source = feed if c.op == "add" else ""
    elif c.source and _control_free(c.source):
        source = c.source
    else:
        raise ValueError(f"{where}.source: {c.source!r} must be non-empty, without control characters")
    return Change(c.op, c.list, imei, c.imsi or "", c.reason, source)


def parse_changeset(payload: bytes | str, *, feed: str) -> ChangeSet:
    """Decode and validate one message of feed ``feed`` (also the default ``source`` of an add).

    Raises :class:`ChangeSetError` for anything that is not a complete, valid change set.
    """
    try:
        msg = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise ChangeSetError(_explain(str(exc)), _seq_hint(payload)) from None
    except msgspec.DecodeError as exc:
        raise ChangeSetError(f"not JSON: {exc}") from None
    if msg.feed is not None and msg.feed != feed:
        raise ChangeSetError(f"feed: message of feed {msg.feed!r}, expected {feed!r}", msg.seq)
    try:
        changes = tuple(_change(i, c, feed) for i, c in enumerate(msg.changes))
    except ValueError as exc:
        raise ChangeSetError(str(exc), msg.seq) from None
    return ChangeSet(msg.seq, changes, msg.sent_at)


def encode_changeset(
    seq: int, changes: tuple[Change, ...] | list[Change], *, feed: str | None = None, sent_at: datetime | None = None
) -> bytes:
    """The message for ``changes`` (for publishers, tools and tests). A source that is
    the default (``feed`` for an add, empty for a remove) or empty is left out, and so
    is an empty reason."""
    return _encoder.encode(
        _ChangeSetMsg(
            seq=seq,
            changes=[
                _ChangeMsg(
                    op=c.op,
                    list=c.list,
                    imei=c.imei,
                    imsi=c.imsi or None,
                    reason=c.reason,
                    source=None if c.source in ("", feed if c.op == "add" else "") else c.source,
                )
                for c in changes
            ],
            feed=feed,
            sent_at=sent_at,
        )
    )


def _explain(message: str) -> str:
    """msgspec's message as ``<path>: <problem>`` without backticks."""
    message = message.replace("`", "")
    text, sep, loc = message.rpartition(" - at ")
    if not sep:
        return message
    path = loc.removeprefix("$").removeprefix(".")
    return f"{path}: {text}" if path else text
