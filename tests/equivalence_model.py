"""The reference for tests/lists/test_store_equivalence.py: the lists the writer has accepted,
held as plain Python data, and the verdict ``decision/`` computes from them.

Entries keep the source and detail the real parsers give them (a file is read with
``lists.formats.parse_list`` into this model), so a verdict's reason can be compared
in full, not only its status.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path

from s13eir.decision.engine import decide
from s13eir.decision.model import ListKind, UnknownPolicy, Verdict
from s13eir.lists.formats import ListSpec, parse_list
from s13eir.lists.redis_layout import Change
from s13eir.lists.snapshot import SnapshotBuilder

IMEI_LISTS = ("black", "grey", "white")
ALL = ("black", "grey", "white", "exceptions", "rules")
TACS = ("35209900", "35290611", "35332011", "86000012")
IMSIS = ("001010000000001", "001010000000002", "001010000000003")
FORMAT = {"black": "dirbs-blacklist", "grey": "csv", "white": "csv", "exceptions": "dirbs-exceptions",
          "rules": "rules-yaml"}  # fmt: skip


def pool_imei(i: int) -> str:
    """IMEI number ``i`` of the test's pool of 400 (four TACs, so TAC rules bite)."""
    return f"{TACS[i % 4]}{i // 4:06d}"


POOL = [pool_imei(i) for i in range(400)]


@dataclass
class Lists:
    imei: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=lambda: {n: {} for n in IMEI_LISTS})
    exceptions: dict[tuple[str, str], str] = field(default_factory=dict)
    tac: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # tac -> [(kind, source, detail)]
    ranges: dict[tuple[str, str], list[tuple[str, str, str]]] = field(default_factory=dict)

    # The ListSink protocol, for parse_list.
    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.imei[kind.value].setdefault(imei14, []).append((source, detail))

    def add_exception(self, imei14: str, imsi: str, source: str) -> None:
        self.exceptions[(imei14, imsi)] = source

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.tac.setdefault(tac8, []).append((kind.value, source, detail))

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None:
        self.ranges.setdefault((first14, last14), []).append((kind.value, source, detail))

    def copy(self) -> Lists:
        return copy.deepcopy(self)

    def part(self, name: str) -> object:
        if name in IMEI_LISTS:
            return self.imei[name]
        if name == "exceptions":
            return self.exceptions
        return (self.tac, self.ranges)

    def set_part(self, name: str, value: object) -> None:
        value = copy.deepcopy(value)
        if name in IMEI_LISTS:
            self.imei[name] = value  # type: ignore[assignment]
        elif name == "exceptions":
            self.exceptions = value  # type: ignore[assignment]
        else:
            self.tac, self.ranges = value  # type: ignore[misc]

    def count(self, name: str) -> int:
        if name in IMEI_LISTS:
            return len(self.imei[name])
        if name == "exceptions":
            return len(self.exceptions)
        return len(self.tac) + len(self.ranges)

    def apply(self, c: Change) -> bool:
        """One change as the writer applies it (a remove without a source drops the entry);
        whether it changed the list (the writer then forgets the generation's digest)."""
        if c.list == "exceptions":
            pair = (c.imei, c.imsi)
            if c.op == "add":
                changed = self.exceptions.get(pair) != c.source
                self.exceptions[pair] = c.source
                return changed
            return self.exceptions.pop(pair, None) is not None
        entries = self.imei[c.list]
        if c.op == "add":
            have = entries.setdefault(c.imei, [])
            if (c.source, c.reason) in have:
                return False
            have.append((c.source, c.reason))
            return True
        return entries.pop(c.imei, None) is not None

    def listed(self) -> dict[str, set[str]]:
        """IMEIs on the black and on the grey list (single entries; rules apart)."""
        return {n: set(self.imei[n]) for n in ("black", "grey")}

    def verdict(self, imei14: str, imsi: str | None) -> Verdict:
        b = SnapshotBuilder()
        for name in IMEI_LISTS:
            for imei, entries in self.imei[name].items():
                for source, detail in entries:
                    b.add_imei(imei, ListKind(name), source, detail)
        for (imei, pair_imsi), source in self.exceptions.items():
            b.add_exception(imei, pair_imsi, source)
        for tac, rules in self.tac.items():
            for kind, source, detail in rules:
                b.add_tac(tac, ListKind(kind), source, detail)
        for (first, last), rules in self.ranges.items():
            for kind, source, detail in rules:
                b.add_range(first, last, ListKind(kind), source, detail)
        return decide(b.build().facts(imei14, imsi), imsi, UnknownPolicy.WHITELISTED, imei14)


def same_content(a: Lists, b: Lists, name: str) -> bool:
    """Whether an import of ``b`` over ``a`` is ``unchanged`` for list ``name``: the same
    entries with the same details, whatever the source (the writer's digest leaves the
    source out, so that a file moved elsewhere is not a new generation)."""

    def norm(lists: Lists) -> object:
        if name in IMEI_LISTS:
            return {i: sorted(d for _, d in e) for i, e in lists.imei[name].items()}
        if name == "exceptions":
            return set(lists.exceptions)
        return ({t: sorted((k, d) for k, _, d in r) for t, r in lists.tac.items()},
                {g: sorted((k, d) for k, _, d in r) for g, r in lists.ranges.items()})  # fmt: skip

    return norm(a) == norm(b)


def write_snapshot(path: Path, name: str, lists: Lists) -> None:
    """The file of list ``name`` as the master list exports it (atomically: temp + rename)."""
    tmp = path.with_suffix(".tmp")
    if name == "black":
        rows = [f"{i},20260101,{'|'.join(d for _, d in e) or 'stolen'}" for i, e in sorted(lists.imei["black"].items())]
        text = "imei,block_date,reasons\n" + "".join(r + "\n" for r in rows)
    elif name in ("grey", "white"):
        text = "imei,list,reason\n" + "".join(f"{i},{name},{e[0][1]}\n" for i, e in sorted(lists.imei[name].items()))
    elif name == "exceptions":
        text = "imei,imsi,msisdn\n" + "".join(f"{i},{s},1555\n" for (i, s) in sorted(lists.exceptions))
    else:
        lines = ["tac:"] + [
            f'  - {{tac: "{t}", list: {r[0][0]}, reason: "{r[0][2]}"}}' for t, r in sorted(lists.tac.items())
        ]
        lines += ["ranges:"] + [f'  - {{from: "{a}", to: "{b}", list: {r[0][0]}, reason: "{r[0][2]}"}}'
                                for (a, b), r in sorted(lists.ranges.items())]  # fmt: skip
        text = "\n".join(lines) + "\n"
    tmp.write_text(text)
    tmp.replace(path)


def read_snapshot(path: Path, name: str) -> Lists:
    """What the embedded engine reads from the file: the entries an import of it holds."""
    out = Lists()
    parse_list(ListSpec(str(path), FORMAT[name], ListKind.BLACK if name == "black" else None), out)
    return out


def random_content(rng: random.Random, name: str, size: int) -> Lists:
    """A master list's version of list ``name`` with ``size`` entries from the pool."""
    out = Lists()
    if name in IMEI_LISTS:
        for imei in rng.sample(POOL, min(size, len(POOL))):
            out.imei[name][imei] = [("", rng.choice(["stolen", "lost", "under review", "fraud"]))]
    elif name == "exceptions":
        for imei in rng.sample(POOL, min(size, len(POOL))):
            out.exceptions[(imei, rng.choice(IMSIS))] = ""
    else:
        for tac in rng.sample(TACS, min(size, 2)):
            out.tac[tac] = [(rng.choice(["black", "grey"]), "", "tac rule")]
        for _ in range(min(size, 2)):
            tac = rng.choice(TACS)
            a = rng.randrange(0, 90)
            out.ranges[(f"{tac}{a:06d}", f"{tac}{a + rng.randrange(1, 10):06d}")] = [
                (rng.choice(["black", "grey", "white"]), "", "range rule")
            ]
    return out
