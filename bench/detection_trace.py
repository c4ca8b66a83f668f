"""A synthetic national day of checks with its ground truth, and how well the detection
rules find what was planted in it: precision and recall per rule, and the core's speed.

The population (fractions of --devices, all configurable by seed only):

* legitimate phones: one subscriber each, a few attaches a day in a home region;
  among them SIM swaps (a new IMSI during the day), second-hand resales (the same, with
  the new owner in another region), dual use (two SIMs of one owner in turn, hours
  apart), travellers by car (a neighbouring region, hours later) and by plane (any
  region, at least the flight time later), and roamers (a foreign IMSI);
* planted, with their ground truth: clones (one IMEI used by two or three subscribers in
  different regions during the day), tampered identifiers (a test TAC, a wrong check
  digit in the 15-digit form, one repeated digit) and SIM boxes (one IMEI cycling
  through 12 to 40 IMSIs).

Precision of a rule: of the IMEIs it flagged, the share that were planted (any kind).
Recall: of the IMEIs planted for it (clones for time_distance and concurrent_use, SIM
boxes for distinct_imsis and daily_average, tampered ones for invalid_identifier), the
share it flagged. daily_average needs five seen days: run with --days 5 or more.

    .venv/bin/python bench/detection_trace.py --devices 1000000 --seed 1 [--days 1] [--trace FILE]

--trace also writes the trace (t,imei,imsi,peer[,sv]) and the configuration's peers, so
that ``s13eir detect`` can be run over the same day.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from s13eir.decision.imei import luhn_check_digit  # noqa: E402
from s13eir.detection.detector import Detector  # noqa: E402
from s13eir.detection.observation import Location, Observation, Rat, distance_km  # noqa: E402
from s13eir.detection.rules import DAY_S, DetectionConfig  # noqa: E402

REGIONS = [  # one MME pool each
    Location("Madrid", 40.4168, -3.7038), Location("Barcelona", 41.3874, 2.1686),
    Location("Valencia", 39.4699, -0.3763), Location("Sevilla", 37.3891, -5.9845),
    Location("Bilbao", 43.2630, -2.9350), Location("A Coruna", 43.3623, -8.4115),
    Location("Zaragoza", 41.6488, -0.8891), Location("Palma", 39.5696, 2.6502),
]  # fmt: skip
PEERS = [f"mme-{r.region.lower().replace(' ', '-')}" for r in REGIONS]
LOCATIONS = dict(zip(PEERS, REGIONS, strict=True))
CAR_KMH, PLANE_KMH = 90.0, 700.0  # door to door, so below cruising speed
TARGETS = {"time_distance": "clone", "concurrent_use": "clone", "distinct_imsis": "simbox",
           "daily_average": "simbox", "invalid_identifier": "tampered"}  # fmt: skip
KINDS = [  # (kind, share of the devices)
    ("swap", 0.02), ("resale", 0.002), ("dual", 0.01), ("car", 0.05), ("plane", 0.01), ("roamer", 0.03),
    ("clone", 0.001), ("tampered", 0.0005), ("simbox", 0.0002),
]  # fmt: skip
PLANTED = {"clone", "tampered", "simbox"}


class Day:
    def __init__(self, devices: int, days: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.days = days
        self.kind: dict[int, str] = {}
        self.imeis: list[str] = []
        self.imsis: list[str] = []
        # (t, device, imsi index, peer index, imei15 or "")
        self.events: list[tuple[float, int, int, int, str]] = []
        for d in range(devices):
            self._device(d)
        self.events.sort()

    def _imsi(self, foreign: bool = False) -> int:
        self.imsis.append(f"{'20801' if foreign else '21401'}{len(self.imsis):010d}")
        return len(self.imsis) - 1

    def _kind(self) -> str:
        x = self.rnd.random()
        for kind, share in KINDS:
            if x < share:
                return kind
            x -= share
        return "normal"

    def _device(self, d: int) -> None:
        rnd = self.rnd
        kind = self.kind[d] = self._kind()
        imei = f"35{rnd.randrange(10**12):012d}"
        imei15 = ""
        if kind == "tampered":
            style = rnd.randrange(3)
            if style == 0:
                imei = f"0010{rnd.randint(1, 17):02d}{rnd.randrange(10**8):08d}"
            elif style == 1:
                imei15 = imei + str((luhn_check_digit(imei) + rnd.randint(1, 8)) % 10 or 1)
                if int(imei15[14]) == luhn_check_digit(imei):
                    imei15 = imei15[:14] + str((int(imei15[14]) + 1) % 10 or 1)
            else:
                imei = str(rnd.randint(1, 9)) * 14
        self.imeis.append(imei)
        home = rnd.randrange(len(PEERS))
        span = self.days * DAY_S
        attaches = sorted(rnd.uniform(0, span) for _ in range(rnd.randint(2, 6) * self.days))
        owner = self._imsi(kind == "roamer")
        add = self.events.append
        if kind in ("normal", "roamer", "tampered"):
            for t in attaches:
                add((t, d, owner, home, imei15))
        elif kind in ("swap", "resale"):
            cut = rnd.uniform(0.2, 0.8) * span
            new, where = self._imsi(), home if kind == "swap" else rnd.randrange(len(PEERS))
            travel = distance_km(REGIONS[home], REGIONS[where]) / CAR_KMH * 3600
            for t in attaches:
                add((t, d, owner, home, imei15) if t < cut else (t + travel, d, new, where, imei15))
        elif kind == "dual":
            second = self._imsi()
            for i, t in enumerate(attaches):
                add((t + i * 7200.0, d, owner if i % 2 == 0 else second, home, imei15))
        elif kind in ("car", "plane"):
            if kind == "car":
                where = min((p for p in range(len(PEERS)) if p != home),
                            key=lambda p: distance_km(REGIONS[home], REGIONS[p]))  # fmt: skip
            else:
                where = rnd.choice([p for p in range(len(PEERS)) if p != home])
            leave = rnd.uniform(0.1, 0.6) * span
            travel = distance_km(REGIONS[home], REGIONS[where]) / (CAR_KMH if kind == "car" else PLANE_KMH) * 3600
            for t in attaches:
                add((t, d, owner, home, imei15) if t < leave else (t + travel, d, owner, where, imei15))
            add((leave + travel, d, owner, where, imei15))
        elif kind == "clone":
            users = [(owner, home)]
            for _ in range(rnd.randint(1, 2)):
                users.append((self._imsi(), rnd.choice([p for p in range(len(PEERS)) if p != home])))
            for imsi, peer in users:
                for t in sorted(rnd.uniform(0, span) for _ in range(rnd.randint(3, 8) * self.days)):
                    add((t, d, imsi, peer, imei15))
        elif kind == "simbox":
            sims = [self._imsi() for _ in range(rnd.randint(12, 40))]
            for day in range(self.days):
                for i in range(rnd.randint(40, 120)):
                    add((day * DAY_S + rnd.uniform(0, DAY_S), d, sims[i % len(sims)], home, imei15))

    def observations(self) -> list[Observation]:
        return [Observation(t, self.imeis[d], self.imsis[s], PEERS[p], Rat.EUTRAN, None, i15 or None)
                for t, d, s, p, i15 in self.events]  # fmt: skip

    def write(self, path: Path) -> None:
        with open(path, "w") as f:
            f.write("t,imei,imsi,peer\n")
            for t, d, s, p, i15 in self.events:
                f.write(f"{t:.3f},{i15 or self.imeis[d]},{self.imsis[s]},{PEERS[p]}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trace", type=Path, default=None, help="also write the trace here")
    args = ap.parse_args()
    started = time.perf_counter()
    day = Day(args.devices, args.days, args.seed)
    made = time.perf_counter() - started
    if args.trace:
        day.write(args.trace)
        peers = "\n".join(f"    - {{origin_host: {p}, origin_realm: bench.test, location: {{region: {r.region}, "
                          f"lat: {r.lat}, lon: {r.lon}}}}}" for p, r in LOCATIONS.items())  # fmt: skip
        args.trace.with_suffix(".peers.yaml").write_text(f"peers:\n  list:\n{peers}\n")
    observations = day.observations()
    detector = Detector(DetectionConfig(enabled=True), LOCATIONS)
    flagged: dict[str, set[str]] = {}
    started = time.perf_counter()
    next_expiry = 3600.0
    for obs in observations:
        if obs.t >= next_expiry:
            detector.expire(obs.t)
            next_expiry = obs.t + 3600.0
        for f in detector.observe(obs, obs.t):
            flagged.setdefault(f.rule, set()).add(f.imei14)
    seconds = time.perf_counter() - started
    # By IMEI, as the rules see them (tampered IMEIs of one repeated digit recur).
    kinds: dict[str, set[str]] = {}
    for d, imei in enumerate(day.imeis):
        kinds.setdefault(imei, set()).add(day.kind[d])
    planted_imeis = {imei for imei, k in kinds.items() if k & PLANTED}
    counts = {k: sum(1 for v in day.kind.values() if v == k) for k, _ in [*KINDS, ("normal", 0)]}
    print(f"{args.devices:,} devices, {args.days} day(s), seed {args.seed}: {len(observations):,} sightings "
          f"(generated in {made:.1f} s)")  # fmt: skip
    print("population: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))
    print(f"detection core: {len(observations) / seconds:,.0f} sightings/s ({seconds:.1f} s), "
          f"{len(detector):,} devices tracked at the end")  # fmt: skip
    print(f"{'rule':<20} {'flagged':>8} {'precision':>10} {'recall':>8}  (target: planted IMEIs)")
    for rule, target in TARGETS.items():
        got = flagged.pop(rule, set())
        want = {imei for imei, k in kinds.items() if target in k}
        precision = f"{len(got & planted_imeis) / len(got):.3f}" if got else "-"
        recall = f"{len(got & want) / len(want):.3f}" if want else "-"
        print(f"{rule:<20} {len(got):>8,} {precision:>10} {recall:>8}  ({target}: {len(want):,})")
    for rule, got in sorted(flagged.items()):
        print(f"{rule:<20} {len(got):>8,} {len(got & planted_imeis) / len(got):>10.3f} {'':>8}  (no planted kind)")


if __name__ == "__main__":
    main()
