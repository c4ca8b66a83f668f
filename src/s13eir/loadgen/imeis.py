"""What the simulated MMEs ask: IMEI/IMSI/SV combinations and the verdict expected for each.

Two sources:

* ``--imeis FILE``: CSV rows ``imei,expected[,imsi]`` written by the operator.
* ``--mix``: generated. Listed kinds (black, grey, white, exception) are drawn from the
  EIR's own list files, read row by row through a :class:`ListSink` (so any format s13eir
  loads works), and every expected verdict is computed by s13eir's own decision engine
  on a snapshot of the same files: the generator and the EIR cannot disagree about what
  the lists say, only about what the EIR answers. Unlisted IMEIs are checked against
  that snapshot too, so a random IMEI that happens to fall in a listed TAC is redrawn.

Everything is drawn from one seeded ``random.Random``, so a run can be repeated.
"""

from __future__ import annotations

import csv
import math
import random
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from s13eir.config import Config
from s13eir.config_loading import load_config
from s13eir.decision.imei import luhn_check_digit
from s13eir.decision.model import EquipmentStatus, ListKind, Rule, Verdict
from s13eir.decision.policy import Policy, Refusal
from s13eir.diameter.constants import INVALID_AVP_VALUE
from s13eir.lists.formats import ListSpec, parse_list
from s13eir.lists.snapshot import ListSnapshot, SnapshotBuilder

from .wire import EQUIPMENT_UNKNOWN, parse_outcome

__all__ = [
    "KINDS",
    "LISTED_KINDS",
    "Combo",
    "Expectations",
    "ImeiFileError",
    "ListOracle",
    "MixError",
    "Workload",
    "generate_workload",
    "load_oracle",
    "parse_mix",
    "read_imeis_file",
]

KINDS = ("black", "grey", "white", "exception", "unknown", "malformed")
LISTED_KINDS = frozenset({"black", "grey", "white", "exception"})
REST = "rest"  # whatever the mix leaves: IMEIs on no list, from a small set of common TACs

DECK_SIZE = 100_000  # request order cycles through this many combination slots
POOL_CAP = 5_000  # distinct combinations per kind at most (each is encoded once)
MAX_FILE_ROWS = 1_000_000
_MAX_DRAWS = 200  # attempts to find one IMEI on no list before giving up
_TAC_SAMPLES = 16  # IMEIs drawn inside each listed TAC or range
_NO_IMSI = 0.1  # share of requests without User-Name
_PAIR_IMSI = 0.1  # share of IMSIs taken from exception pairs (the pair's IMEI aside)


class MixError(ValueError):
    """A --mix that cannot be used (bad syntax, or a kind the lists cannot provide)."""


class ImeiFileError(ValueError):
    """A bad --imeis file; the message names the file and line."""


def parse_mix(text: str) -> dict[str, float]:
    """``black=0.01,grey=1%,unknown=0.05,malformed=0.001`` -> {kind: fraction}; the rest
    of the traffic (1 - sum) is IMEIs on no list."""
    out: dict[str, float] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        item = item.strip()
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not item or not sep or not name:
            raise MixError(f"--mix: expected KIND=FRACTION items separated by commas, got {item!r}")
        if name not in KINDS:
            raise MixError(f"--mix: unknown kind {name!r} (kinds: {', '.join(KINDS)})")
        if name in out:
            raise MixError(f"--mix: {name!r} is given twice")
        value = value.strip()
        try:
            fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError:
            raise MixError(f"--mix: {name}={value!r} is not a number") from None
        if not (math.isfinite(fraction) and 0 <= fraction <= 1):
            raise MixError(f"--mix: {name}={value} is not a fraction between 0 and 1")
        out[name] = fraction
    total = sum(out.values())
    if total > 1 + 1e-9:
        raise MixError(f"--mix: the fractions add up to {total:g}, more than 1")
    return out


@dataclass(frozen=True, slots=True)
class Combo:
    """One request to send, pre-encoded once, and the outcome it must get."""

    imei: str  # as sent (14/15 digits, or malformed)
    imsi: str | None  # User-Name, or None
    sv: str | None  # Software-Version
    expected: int  # an outcome code, see wire.outcome
    kind: str


@dataclass(frozen=True)
class Workload:
    """Combinations and the order they are sent in (each MME starts at its own offset)."""

    combos: Sequence[Combo]
    deck: array[int]
    mix: Mapping[str, float] = field(default_factory=dict)  # the fractions used, rest included
    source: str = "generated"


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the EIR answers where no list decides: its policy, asked as the EIR asks it."""

    policy: Policy = field(default_factory=Policy)

    @classmethod
    def from_config(cls, config: Config) -> Expectations:
        return cls(config.policy.decision_policy())

    @property
    def unlisted(self) -> int:
        return _verdict_outcome_status(self.policy.unlisted().status)

    @property
    def malformed(self) -> int:
        verdict = self.policy.malformed("")
        return INVALID_AVP_VALUE if isinstance(verdict, Refusal) else _verdict_outcome_status(verdict.status)


def _verdict_outcome_status(status: EquipmentStatus | None) -> int:
    return EQUIPMENT_UNKNOWN if status is None else int(status)


# -- the EIR's lists --------------------------------------------------------------------


class _Candidates:
    """A ListSink that keeps a bounded, seeded sample of listed IMEIs and exception pairs."""

    def __init__(self, rng: random.Random, cap: int = POOL_CAP) -> None:
        self.rng = rng
        self.cap = cap
        self.imeis: list[str] = []
        self.pairs: list[tuple[str, str]] = []
        self._seen_imeis = 0
        self._seen_pairs = 0

    def _keep_imei(self, imei14: str) -> None:
        # Reservoir sampling: a 10-million-row list costs no more memory than a small one.
        self._seen_imeis += 1
        if len(self.imeis) < self.cap:
            self.imeis.append(imei14)
        else:
            j = self.rng.randrange(self._seen_imeis)
            if j < self.cap:
                self.imeis[j] = imei14

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self._keep_imei(imei14)

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self._seen_pairs += 1
        if len(self.pairs) < self.cap:
            self.pairs.append((imei14, imsi))
        else:
            j = self.rng.randrange(self._seen_pairs)
            if j < self.cap:
                self.pairs[j] = (imei14, imsi)

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        for _ in range(_TAC_SAMPLES):
            self._keep_imei(f"{tac8}{self.rng.randrange(10**6):06d}")

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        first, last = int(first14), int(last14)
        for _ in range(min(_TAC_SAMPLES, last - first + 1)):
            self._keep_imei(f"{self.rng.randint(first, last):014d}")


class _Tee:
    """Feeds each row both to the snapshot builder and to the candidate sample."""

    def __init__(self, builder: SnapshotBuilder, candidates: _Candidates) -> None:
        self.builder = builder
        self.candidates = candidates

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.builder.add_imei(imei14, kind, source, detail)
        self.candidates.add_imei(imei14, kind, source, detail)

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self.builder.add_exception(imei14, imsi, source)
        self.candidates.add_exception(imei14, imsi, source)

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.builder.add_tac(tac8, kind, source, detail)
        self.candidates.add_tac(tac8, kind, source, detail)

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.builder.add_range(first14, last14, kind, source, detail)
        self.candidates.add_range(first14, last14, kind, source, detail)


class ListOracle:
    """The EIR's verdicts, computed by s13eir's own engine on the EIR's own lists."""

    def __init__(self, snapshot: ListSnapshot, expectations: Expectations, candidates: _Candidates) -> None:
        self.snapshot = snapshot
        self.expectations = expectations
        self.candidates = candidates

    def verdict(self, imei14: str, imsi: str | None) -> Verdict:
        return self.expectations.policy.verdict(self.snapshot.facts(imei14, imsi), imsi, imei14)


def load_oracle(config_path: str, rng: random.Random) -> tuple[Config, ListOracle]:
    """Read the EIR's configuration and its list files (raises ConfigError, ListFormatError)."""
    config = load_config(config_path)
    builder = SnapshotBuilder()
    candidates = _Candidates(rng)
    tee = _Tee(builder, candidates)
    for src in config.store.lists:
        parse_list(ListSpec(src.path, src.format, src.list), tee)
    oracle = ListOracle(builder.build(config.store.bloom_fp_rate), Expectations.from_config(config), candidates)
    return config, oracle


def _kind_of(verdict: Verdict) -> str | None:
    rule = verdict.reason.rule
    if rule is Rule.EXCEPTION:
        return "exception"
    if rule in (Rule.POLICY, Rule.MALFORMED) or verdict.status is None:
        return None
    return {EquipmentStatus.BLACKLISTED: "black", EquipmentStatus.GREYLISTED: "grey"}.get(verdict.status, "white")


# -- generation -------------------------------------------------------------------------


class _Generator:
    def __init__(self, rng: random.Random, oracle: ListOracle | None, expectations: Expectations) -> None:
        self.rng = rng
        self.oracle = oracle
        self.expectations = expectations
        self.pair_imsis = [imsi for _, imsi in oracle.candidates.pairs] if oracle else []
        # "Common" TACs for the rest of the traffic: BABT (35) and TAF (86) style prefixes.
        self.tacs = [f"{rng.choice(('35', '86', '01'))}{rng.randrange(10**6):06d}" for _ in range(64)]

    def imsi(self) -> str | None:
        r = self.rng.random()
        if r < _NO_IMSI:
            return None
        if r < _NO_IMSI + _PAIR_IMSI and self.pair_imsis:
            return self.rng.choice(self.pair_imsis)
        return f"00101{self.rng.randrange(10**10):010d}"  # MCC 001, MNC 01 (test network)

    def sv(self) -> str:
        return f"{self.rng.randrange(100):02d}"

    def variant(self, imei14: str) -> str:
        """14 digits, or 15 with the Luhn check digit, or 15 with the spare digit 0."""
        r = self.rng.randrange(3)
        if r == 0:
            return imei14
        return imei14 + (str(luhn_check_digit(imei14)) if r == 1 else "0")

    def listed(self, kind: str, candidates: list[tuple[str, str | None]], n: int) -> list[Combo]:
        """Up to ``n`` combinations whose verdict is of ``kind``, from candidates of that kind."""
        assert self.oracle is not None
        out: list[Combo] = []
        for i in range(n):
            imei14, pair_imsi = candidates[i % len(candidates)]
            for _ in range(_MAX_DRAWS):
                imsi = pair_imsi if pair_imsi is not None else self.imsi()
                verdict = self.oracle.verdict(imei14, imsi)
                if _kind_of(verdict) == kind:
                    break
            else:
                continue  # this candidate never gives that kind with a random IMSI: skip it
            out.append(Combo(self.variant(imei14), imsi, self.sv(), _verdict_outcome_status(verdict.status), kind))
        return out

    def unlisted(self, kind: str, n: int) -> list[Combo]:
        out: list[Combo] = []
        for _ in range(n):
            for _ in range(_MAX_DRAWS):
                if kind == REST:
                    imei14 = f"{self.rng.choice(self.tacs)}{self.rng.randrange(10**6):06d}"
                else:
                    imei14 = f"{self.rng.randrange(10**14):014d}"
                imsi = self.imsi()
                if self.oracle is None:
                    expected = self.expectations.unlisted
                    break
                verdict = self.oracle.verdict(imei14, imsi)
                if verdict.reason.rule is Rule.POLICY:
                    expected = _verdict_outcome_status(verdict.status)
                    break
            else:
                raise MixError(f"could not find IMEIs on no list in {_MAX_DRAWS} draws: do the lists cover everything?")
            out.append(Combo(self.variant(imei14), imsi, self.sv(), expected, kind))
        return out

    def malformed(self, n: int) -> list[Combo]:
        out: list[Combo] = []
        for _ in range(n):
            digits = f"{self.rng.randrange(10**17):017d}"
            shape = self.rng.randrange(3)
            if shape == 0:  # a letter in a 14- or 15-digit IMEI
                imei = digits[: self.rng.choice((14, 15))]
                pos = self.rng.randrange(len(imei))
                imei = imei[:pos] + self.rng.choice("ABCDEFX") + imei[pos + 1 :]
            else:  # 13 or 17 digits (16 is left out: imeisv_in_imei: split would read it)
                imei = digits[:13] if shape == 1 else digits
            out.append(Combo(imei, self.imsi(), self.sv(), self.expectations.malformed, "malformed"))
        return out


def _listed_candidates(oracle: ListOracle, rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    """Listed candidates by the kind of their verdict (exception pairs with their IMSI)."""
    by_kind: dict[str, list[tuple[str, str | None]]] = {k: [] for k in LISTED_KINDS}
    for imei14 in oracle.candidates.imeis:
        kind = _kind_of(oracle.verdict(imei14, None))
        if kind is not None:
            by_kind[kind].append((imei14, None))
    for imei14, imsi in oracle.candidates.pairs:
        kind = _kind_of(oracle.verdict(imei14, imsi))
        if kind is not None:
            by_kind[kind].append((imei14, imsi))
    for candidates in by_kind.values():
        rng.shuffle(candidates)
    return by_kind


def generate_workload(
    mix: Mapping[str, float],
    rng: random.Random,
    oracle: ListOracle | None = None,
    expectations: Expectations | None = None,
    *,
    deck_size: int = DECK_SIZE,
    pool_cap: int = POOL_CAP,
) -> Workload:
    """Combinations for ``mix`` and a shuffled deck of ``deck_size`` slots in its proportions."""
    if expectations is None:
        expectations = oracle.expectations if oracle is not None else Expectations()
    listed = sorted(k for k, f in mix.items() if f > 0 and k in LISTED_KINDS)
    if listed and oracle is None:
        raise MixError(f"--mix {', '.join(listed)}: listed IMEIs need --config (the EIR's lists) to pick them from")
    counts = {k: max(1, round(f * deck_size)) for k, f in mix.items() if f > 0}
    counts[REST] = max(0, deck_size - sum(counts.values()))
    gen = _Generator(rng, oracle, expectations)
    by_kind = _listed_candidates(oracle, rng) if listed and oracle is not None else {}
    combos: list[Combo] = []
    deck: list[int] = []
    for kind, count in counts.items():
        if count == 0:
            continue
        n = min(count, pool_cap)
        if kind in LISTED_KINDS:
            if not by_kind[kind]:
                raise MixError(f"--mix {kind}: the configured lists have no IMEI that the EIR answers as {kind}")
            made = gen.listed(kind, by_kind[kind], n)
            if not made:
                raise MixError(f"--mix {kind}: no IMEI/IMSI combination of that kind could be drawn")
        elif kind == "malformed":
            made = gen.malformed(n)
        else:
            made = gen.unlisted(kind, n)
        base = len(combos)
        combos.extend(made)
        deck.extend(base + i % len(made) for i in range(count))
    rng.shuffle(deck)
    shares = {k: c / deck_size for k, c in counts.items()}
    return Workload(combos, array("I", deck), shares, "generated")


# -- --imeis FILE -----------------------------------------------------------------------


def read_imeis_file(path: str, rng: random.Random) -> Workload:
    """CSV ``imei,expected[,imsi]`` (an optional header row, ``#`` comments); sent in file
    order. A row without IMSI is sent without User-Name; the SV is drawn per row."""
    combos: list[Combo] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if not combos and row[0].strip().lower() == "imei":
                    continue  # header row
                if len(combos) >= MAX_FILE_ROWS:
                    raise ImeiFileError(f"{path}:{line}: more than {MAX_FILE_ROWS} rows; use a sample")
                combos.append(_file_row(path, line, row, rng))
    except OSError as exc:
        raise ImeiFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ImeiFileError(f"{path}: {exc}") from None
    if not combos:
        raise ImeiFileError(f"{path}: no rows (expected imei,expected[,imsi])")
    return Workload(combos, array("I", range(len(combos))), {}, path)


def _file_row(path: str, line: int, row: list[str], rng: random.Random) -> Combo:
    if len(row) not in (2, 3):
        raise ImeiFileError(f"{path}:{line}: {len(row)} columns, expected imei,expected[,imsi]")
    imei = row[0].strip()
    if not imei:
        raise ImeiFileError(f"{path}:{line}: empty IMEI")
    try:
        expected = parse_outcome(row[1])
    except ValueError as exc:
        raise ImeiFileError(f"{path}:{line}: {exc}") from None
    imsi = row[2].strip() if len(row) == 3 and row[2].strip() else None
    if imsi is not None and not (5 <= len(imsi) <= 15 and imsi.isascii() and imsi.isdigit()):
        raise ImeiFileError(f"{path}:{line}: IMSI {imsi!r} is not 5-15 digits")
    return Combo(imei, imsi, f"{rng.randrange(100):02d}", expected, "file")
