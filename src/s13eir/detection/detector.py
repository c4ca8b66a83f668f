"""The detection core (ITU-T Q.5052), sans-IO: ``observe(observation, now)`` returns the
findings it makes, ``expire(now)`` forgets what every window has left behind. Time is
an argument, as in the protocol core: a live node passes its clock, ``s13eir detect``
the trace's. Pure.

State is kept per IMEI (:class:`DeviceState`, a value that a node sharing detection
keeps in Redis) and bounded: the IMSIs seen in the longest count window (at most a few
more than the threshold), the IMSIs per day over the averaging period, the last
``max_recent`` observations for the pairwise rules, and the highest software version.
A check in the same context as the one before it (IMSI, peer, radio access, software
version, IMEI as sent) replaces it in the recent observations instead of adding one: the
pairwise rules look for a different IMSI, and of a run of one IMSI on one peer the latest
is the one nearest in time, so a rule trips on the run exactly when it trips on its
latest; an ordinary phone keeps one observation, not ``max_recent``.
A rule reports once per new piece of evidence (a new IMSI past the threshold, a new pair
of IMSIs, a new day over the average), not on every later sighting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ..decision.imei import luhn_check_digit, tac
from .device import DeviceState
from .observation import Location, Observation, Rat, TacInfo, distance_km
from .rules import DAY_S, Action, DetectionConfig

_EXTRA_IMSIS = 8  # kept past a count threshold, for the case's evidence
_MAX_UNKNOWN_TACS = 1_000_000
# A repeat of the last check within this many seconds is not fed to the rules again: the
# pairwise rules then measure from the first of the repeats, which for 150 km at 1,000 km/h
# (9 minutes) changes nothing.
REPEAT_S = 60.0  # TACs not in the database whose first sighting is remembered


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # the rule's name in the configuration (distinct_imsis, time_distance...)
    action: Action
    imei14: str
    t: float
    imsis: tuple[str, ...]  # the subscriber identities involved, first seen first
    evidence: tuple[Observation, ...]  # the observations that tripped it
    detail: str


def is_test_tac(imei14: str) -> bool:
    """3GPP TS 22.016 test IMEIs, as DIRBS ``is_test_tac`` reads them: 00 then 10 and
    01-17, or 00 then 44, 86 or 91."""
    if imei14[:2] != "00":
        return False
    nxt = imei14[2:4]
    return (nxt == "10" and 1 <= int(imei14[4:6]) <= 17) or nxt in ("44", "86", "91")


class Detector:
    def __init__(
        self,
        config: DetectionConfig,
        locations: Mapping[str, Location],
        tac_info: Callable[[str], TacInfo | None] | None = None,
        shortcuts: bool = True,
    ) -> None:
        self.config = config
        self.rules = config.rules
        self.locations = locations
        self.tac_info = tac_info
        self._devices: dict[str, DeviceState] = {}
        self._unknown_tacs: dict[str, float] = {}  # TAC not in the database -> first seen
        r = self.rules
        windows = [r.distinct_imsis.window_days * DAY_S, r.daily_average.period_days * DAY_S,
                   r.time_distance.window_hours * 3600, r.concurrent_use.within_s]  # fmt: skip
        self.horizon = max(windows)  # past it, nothing of a device matters any more
        # The shortcuts skip work that cannot make a finding (tests prove them equal to the
        # full path, shortcuts=False). One IMSI in the count window means no other IMSI
        # within the pairwise rules' windows, when the count window is the longer.
        self.shortcuts = shortcuts
        pair_windows = [r.time_distance.window_hours * 3600, r.concurrent_use.within_s]
        self._single_imsi_no_pairs = shortcuts and r.distinct_imsis.window_days * DAY_S >= max(pair_windows)

    def __len__(self) -> int:
        return len(self._devices)

    def observe(self, obs: Observation, now: float) -> list[Finding]:
        dev = self._devices.get(obs.imei14)
        if dev is None:
            dev = self._devices[obs.imei14] = DeviceState(self.config.max_recent)
        return self.apply(dev, obs, now)

    def new_state(self) -> DeviceState:
        return DeviceState(self.config.max_recent)

    def apply(self, dev: DeviceState, obs: Observation, now: float) -> list[Finding]:
        """Apply one observation to ``dev`` (changed in place); the findings it makes."""
        if dev.recent:
            # The same phone, SIM, peer and software version as its last check, a moment
            # later (an attach then a tracking-area update): nothing any rule has not seen.
            last = dev.recent[-1]
            if (obs.t - last.t < REPEAT_S and _same_context(obs, last)
                    and int(obs.t // DAY_S) == int(last.t // DAY_S)):  # fmt: skip
                dev.last = max(dev.last, obs.t, now)
                return []
            if (self.shortcuts and obs.imsi == last.imsi and obs.sv == last.sv and obs.rat is last.rat
                    and obs.imei15 == last.imei15 and obs.t >= last.t
                    and int(obs.t // DAY_S) == int(last.t // DAY_S)):  # fmt: skip
                return self._moved(dev, obs, now)
        found = list(self._identifier(obs, dev))
        found += self._software(obs, dev)
        found += self._technology(obs, dev)
        found += self._tac_not_found(obs, dev)
        if obs.imsi is not None:
            found += self._counts(obs, dev)
            if not (self._single_imsi_no_pairs and len(dev.imsis) == 1):
                found += self._pairs(obs, dev)
        self._keep(dev, obs, now)
        return found

    def _moved(self, dev: DeviceState, obs: Observation, now: float) -> list[Finding]:
        """The phone, SIM, software version and radio access of the last check, the same
        day, on another peer or later: the rules of the identifier, the software and the
        technology see what they saw then, and the counts gain nothing; the IMSI's last
        sighting moves, and the pairwise rules see a new place and time."""
        found = list(self._tac_not_found(obs, dev))  # the only one that depends on time alone
        if obs.imsi is not None:
            self._touch_imsi(obs.imsi, obs.t, dev)
            if not (self._single_imsi_no_pairs and len(dev.imsis) == 1):
                found += self._pairs(obs, dev)
        self._keep(dev, obs, now)
        return found

    def _keep(self, dev: DeviceState, obs: Observation, now: float) -> None:
        if dev.recent and _same_context(obs, dev.recent[-1]) and obs.t >= dev.recent[-1].t:
            dev.recent[-1] = obs  # the latest of a run stands for it (see the module's note)
        else:
            dev.recent.append(obs)
        dev.last = max(dev.last, obs.t, now)

    def expire(self, now: float) -> int:
        """Forget the devices not seen within the longest window; how many were dropped."""
        cutoff = now - self.horizon
        stale = [imei for imei, dev in self._devices.items() if dev.last < cutoff]
        for imei in stale:
            del self._devices[imei]
        return len(stale)

    # -- the rules ----------------------------------------------------------------------

    def _finding(self, dev: DeviceState, rule: str, key: object, obs: Observation, imsis: tuple[str, ...],
                 evidence: tuple[Observation, ...], detail: str) -> Iterator[Finding]:  # fmt: skip
        k = _key(rule, key)
        if k in dev.reported:
            return
        dev.reported.add(k)
        action = getattr(self.rules, rule).action
        yield Finding(rule, action, obs.imei14, obs.t, imsis, evidence, detail)

    def _identifier(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        rule = self.rules.invalid_identifier
        if not rule.enabled:
            return
        imei = obs.imei14
        why = None
        sent = obs.imei15[14] if obs.imei15 is not None else "0"
        if rule.luhn and sent != "0" and int(sent) != luhn_check_digit(imei):
            why = f"check digit {sent}, Luhn gives {luhn_check_digit(imei)}"
        if why is None and rule.test_tac and is_test_tac(imei):
            why = f"test TAC {tac(imei)}"
        if why is None and rule.reserved and tac(imei) == "00000000":
            why = "TAC 00000000, never allocated"
        if why is None and rule.repeated_digits and len(set(imei)) == 1:
            why = "one repeated digit"
        if why is not None:
            yield from self._finding(dev, "invalid_identifier", why, obs, _imsis(obs), (obs,), why)

    def _software(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        rule = self.rules.software_version
        sv = obs.sv
        if not rule.enabled or sv is None or not (len(sv) == 2 and sv.isascii() and sv.isdigit()):
            return
        svn = int(sv)
        if rule.reserved_svn and svn == 99:
            yield from self._finding(dev, "software_version", "reserved", obs, _imsis(obs), (obs,),
                                     "SVN 99 is reserved (TS 23.003 §6.2.2)")  # fmt: skip
        if rule.downgrade and dev.max_svn is not None and svn < dev.max_svn:
            before = next((o for o in reversed(dev.recent) if o.sv == f"{dev.max_svn:02d}"), None)
            yield from self._finding(dev, "software_version", ("down", svn, dev.max_svn), obs, _imsis(obs),
                                     (*((before,) if before else ()), obs),
                                     f"SVN {svn:02d} after {dev.max_svn:02d}")  # fmt: skip
        dev.max_svn = svn if dev.max_svn is None else max(dev.max_svn, svn)

    def _technology(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        rule = self.rules.unexpected_technology
        if not rule.enabled or self.tac_info is None:
            return
        info = self.tac_info(tac(obs.imei14))
        if info is not None and info.rats and obs.rat not in info.rats:
            can = ", ".join(sorted(r.value for r in info.rats))
            yield from self._finding(dev, "unexpected_technology", obs.rat, obs, _imsis(obs), (obs,),
                                     f"{info.model} ({can}) seen on {obs.rat.value}")  # fmt: skip

    def _tac_not_found(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        rule = self.rules.tac_not_found
        if not rule.enabled or self.tac_info is None:
            return
        code = tac(obs.imei14)
        if self.tac_info(code) is not None:
            return
        first = self._unknown_tacs.get(code)
        if first is None:
            if len(self._unknown_tacs) >= _MAX_UNKNOWN_TACS:
                return
            first = self._unknown_tacs[code] = obs.t
        delay = rule.delay_days.get(code[:2], rule.default_delay_days)
        if obs.t - first >= delay * DAY_S:
            detail = f"TAC {code} not in the TAC database {delay:g} days after its first sighting"
            yield from self._finding(dev, "tac_not_found", code, obs, _imsis(obs), (obs,), detail)

    def _touch_imsi(self, imsi: str, t: float, dev: DeviceState) -> None:
        """The distinct IMSIs in the count window, oldest first (re-inserted on every sighting)."""
        distinct = self.rules.distinct_imsis
        imsis = dev.imsis
        imsis.pop(imsi, None)
        imsis[imsi] = t
        cutoff = t - distinct.window_days * DAY_S
        while imsis:
            first, seen = next(iter(imsis.items()))
            if seen >= cutoff:
                break
            del imsis[first]
        while len(imsis) > distinct.threshold + _EXTRA_IMSIS:
            del imsis[next(iter(imsis))]

    def _counts(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        imsi = obs.imsi
        assert imsi is not None
        distinct, daily = self.rules.distinct_imsis, self.rules.daily_average
        self._touch_imsi(imsi, obs.t, dev)
        if distinct.enabled and len(dev.imsis) >= distinct.threshold:
            imsis = tuple(dev.imsis)
            yield from self._finding(dev, "distinct_imsis", imsi, obs, imsis, (obs,),
                                     f"{len(imsis)} IMSIs within {distinct.window_days:g} days")  # fmt: skip
            dev.reported.update(_key("distinct_imsis", i) for i in imsis)  # each reported: only a new one reports again
        # the average of distinct IMSIs per seen day
        day = int(obs.t // DAY_S)
        dev.days.setdefault(day, set())
        if len(dev.days[day]) < distinct.threshold + _EXTRA_IMSIS:
            dev.days[day].add(imsi)
        first_day = day - int(daily.period_days) + 1
        for d in [d for d in dev.days if d < first_day]:
            del dev.days[d]
        if daily.enabled and len(dev.days) >= daily.min_seen_days:
            average = sum(len(s) for s in dev.days.values()) / len(dev.days)
            if average >= daily.threshold:
                imsis = tuple(sorted(set().union(*dev.days.values())))
                yield from self._finding(dev, "daily_average", day, obs, imsis, (obs,),
                                         f"{average:.2f} IMSIs a day over {len(dev.days)} days")  # fmt: skip

    def _pairs(self, obs: Observation, dev: DeviceState) -> Iterator[Finding]:
        imsi = obs.imsi
        assert imsi is not None
        td, cu = self.rules.time_distance, self.rules.concurrent_use
        here = self.locations.get(obs.peer)
        for prior in reversed(dev.recent):
            if prior.imsi is None or prior.imsi == imsi:
                continue
            dt = abs(obs.t - prior.t)
            other = prior.imsi
            pair = (other, imsi) if other < imsi else (imsi, other)
            if td.enabled and dt <= td.window_hours * 3600 and here is not None:
                there = self.locations.get(prior.peer)
                if there is not None:
                    km = distance_km(here, there)
                    if km >= td.min_distance_km and km > td.max_speed_kmh * dt / 3600:
                        speed = f"{km / (dt / 3600):,.0f} km/h" if dt > 0 else "at the same time"
                        yield from self._finding(
                            dev,
                            "time_distance",
                            pair,
                            obs,
                            (other, imsi),
                            (prior, obs),
                            f"{km:,.0f} km in {dt:,.0f} s ({there.region} to {here.region}, {speed})",
                        )
            if cu.enabled and dt <= cu.within_s:
                # A (this IMSI) earlier still, before the other IMSI, within the window: A, B, A.
                earlier = next((o for o in dev.recent if o.imsi == imsi and o.t <= prior.t
                                and obs.t - o.t <= cu.within_s), None)  # fmt: skip
                # On different peers: one phone cannot be served by two pools at once; the
                # same pool may see a SIM tried and put back.
                if earlier is not None and prior.peer != obs.peer and prior.peer != earlier.peer:
                    yield from self._finding(
                        dev,
                        "concurrent_use",
                        pair,
                        obs,
                        (imsi, other),
                        (earlier, prior, obs),
                        f"{imsi} and {other} in turn within {obs.t - earlier.t:,.0f} s",
                    )


def _same_context(a: Observation, b: Observation) -> bool:
    return a.imsi == b.imsi and a.peer == b.peer and a.sv == b.sv and a.rat is b.rat and a.imei15 == b.imei15


def _key(rule: str, key: object) -> str:
    """The evidence key as the state keeps it: ``rule:part,part``."""
    parts = key if isinstance(key, tuple) else (key,)
    return rule + ":" + ",".join(p.value if isinstance(p, Rat) else str(p) for p in parts)


def _imsis(obs: Observation) -> tuple[str, ...]:
    return (obs.imsi,) if obs.imsi is not None else ()


__all__ = ["Detector", "Finding", "Rat", "is_test_tac"]
