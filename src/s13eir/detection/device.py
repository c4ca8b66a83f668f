"""What detection keeps of one IMEI, and its bytes. Pure.

The state is a value: a node sharing detection through Redis reads it, applies its
checks with the same detector and writes it back only if nobody changed it meanwhile
(compare-and-set), so the bytes must round-trip exactly: times are kept as the floats
they were, the IMSI and peer strings once each in a table.

Layout (MessagePack array, version 1): ``[1, last, max_svn, strings, imsis, days,
reported, recent]`` where ``strings`` lists every IMSI and peer once, ``imsis`` is
``[[string, last seen], ...]`` oldest first, ``days`` ``[[day, [string, ...]], ...]``,
``reported`` the evidence keys already reported, and ``recent``
``[[t, imsi string or -1, peer string, rat, sv or nil, 15th digit or nil], ...]``.
"""

from __future__ import annotations

from collections import deque

import msgspec

from .observation import Observation, Rat

FORMAT = 1
_RATS = (Rat.GERAN_UTRAN, Rat.EUTRAN, Rat.NR)
_RAT_CODE = {r: i for i, r in enumerate(_RATS)}
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class DeviceStateError(ValueError):
    """Bytes that are not a device state this version writes."""


class DeviceState:
    __slots__ = ("days", "imsis", "last", "max_svn", "recent", "reported")

    def __init__(self, max_recent: int) -> None:
        self.recent: deque[Observation] = deque(maxlen=max_recent)
        self.imsis: dict[str, float] = {}  # IMSI -> last seen, oldest first
        self.days: dict[int, set[str]] = {}  # day number -> IMSIs seen that day
        self.reported: set[str] = set()  # "rule:evidence key" already reported
        self.max_svn: int | None = None
        self.last = 0.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceState):
            return NotImplemented
        return (list(self.recent) == list(other.recent) and list(self.imsis.items()) == list(other.imsis.items())
                and self.days == other.days and self.reported == other.reported
                and self.max_svn == other.max_svn and self.last == other.last)  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    def encode(self) -> bytes:
        index: dict[str, int] = {}

        def ref(s: str) -> int:
            i = index.get(s)
            if i is None:
                i = index[s] = len(index)
            return i

        imsis = [[ref(imsi), seen] for imsi, seen in self.imsis.items()]
        days = [[day, sorted(ref(s) for s in imsis_of)] for day, imsis_of in sorted(self.days.items())]
        recent = [[o.t, -1 if o.imsi is None else ref(o.imsi), ref(o.peer), _RAT_CODE[o.rat], o.sv,
                   None if o.imei15 is None else o.imei15[14]] for o in self.recent]  # fmt: skip
        out: bytes = _encoder.encode(
            [FORMAT, self.last, self.max_svn, list(index), imsis, days, sorted(self.reported), recent]
        )
        return out

    @classmethod
    def decode(cls, data: bytes, imei14: str, max_recent: int) -> DeviceState:
        try:
            fmt, last, max_svn, strings, imsis, days, reported, recent = _decoder.decode(data)
            if fmt != FORMAT:
                raise DeviceStateError(f"device state format {fmt}, this version reads {FORMAT}")
            state = cls(max_recent)
            state.last = float(last)
            state.max_svn = max_svn
            state.imsis = {strings[i]: float(seen) for i, seen in imsis}
            state.days = {int(day): {strings[i] for i in refs} for day, refs in days}
            state.reported = set(reported)
            for t, imsi, peer, rat, sv, d15 in recent:
                state.recent.append(Observation(float(t), imei14, None if imsi < 0 else strings[imsi], strings[peer],
                                                _RATS[rat], sv, None if d15 is None else imei14 + d15))  # fmt: skip
        except DeviceStateError:
            raise
        except (msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise DeviceStateError(f"not a device state: {exc}") from None
        return state
