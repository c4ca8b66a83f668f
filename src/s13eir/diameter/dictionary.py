"""AVP and command definitions loaded from the data files in ``dictionaries/``.

The files hold the command formats (CCF) as RFC 6733 and TS 29.272 print them;
``parse_ccf`` turns each into a ``Grammar`` that ``validate`` checks messages
against. Operators add vendor AVPs by adding a file, without touching code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

AVP_TYPES = frozenset(
    {
        "OctetString", "Integer32", "Integer64", "Unsigned32", "Unsigned64", "Float32", "Float64",
        "Grouped", "Address", "Time", "UTF8String", "DiameterIdentity", "DiameterURI", "Enumerated",
    }
)  # fmt: skip
FLAG_RULES = frozenset({"must", "may", "mustnot", "shouldnot"})
ANY_AVP = "AVP"
UNBOUNDED = 1 << 30


class DictionaryError(Exception):
    """A dictionary file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Element:
    """One line of a CCF: an AVP name with its occurrence bounds."""

    name: str
    min: int
    max: int
    fixed: bool = False  # "< Name >": fixed position


@dataclass(frozen=True, slots=True)
class Grammar:
    elements: tuple[Element, ...]
    allows_any: bool  # "*[ AVP ]" present

    def element(self, name: str) -> Element | None:
        for e in self.elements:
            if e.name == name:
                return e
        return None


@dataclass(frozen=True, slots=True)
class AvpDef:
    name: str
    code: int
    vendor: int
    type: str
    m: str
    v: str
    values: Mapping[int, str] = field(default_factory=dict)
    grammar: Grammar | None = None

    def key(self) -> tuple[int, int]:
        return (self.code, self.vendor)


@dataclass(frozen=True, slots=True)
class CommandDef:
    name: str
    code: int
    application_id: int
    request_flags: frozenset[str]
    answer_flags: frozenset[str]
    request: Grammar
    answer: Grammar
    request_ignored: frozenset[str] = frozenset()  # AVPs a receiver must ignore in the request


@dataclass(frozen=True, slots=True)
class Dictionary:
    avps: Mapping[tuple[int, int], AvpDef]
    by_name: Mapping[str, AvpDef]
    commands: Mapping[tuple[int, int], CommandDef]  # (application_id, command_code)
    applications: Mapping[int, str]

    def command(self, application_id: int, code: int) -> CommandDef | None:
        return self.commands.get((application_id, code))


_HEADER_RE = re.compile(r"<\s*Diameter\s+Header\s*:\s*([^>]*)>", re.IGNORECASE)
_AVP_HEADER_RE = re.compile(r"<\s*AVP\s+Header\s*:\s*([^>]*)>", re.IGNORECASE)
_ELEMENT_RE = re.compile(r"(\d*)\s*(\*?)\s*(\d*)\s*([<{\[])\s*([A-Za-z0-9][A-Za-z0-9-]*)\s*([>}\]])")
_CLOSE = {"<": ">", "{": "}", "[": "]"}


def parse_ccf(text: str) -> tuple[list[str], Grammar]:
    """Parse a command or grouped-AVP format. Returns the header fields and the grammar."""
    if "::=" not in text:
        raise DictionaryError(f"no '::=' in {text[:40]!r}")
    body = text.split("::=", 1)[1]
    header = _HEADER_RE.search(body) or _AVP_HEADER_RE.search(body)
    if header is None:
        raise DictionaryError(f"no header in {text[:40]!r}")
    fields = [f.strip() for f in header.group(1).replace(",", " , ").split(",")]
    rest = body[header.end() :]
    elements: list[Element] = []
    allows_any = False
    pos = 0
    for m in _ELEMENT_RE.finditer(rest):
        if rest[pos : m.start()].strip():
            raise DictionaryError(f"cannot read {rest[pos : m.start()].strip()!r}")
        pos = m.end()
        lo_s, star, hi_s, opening, name, closing = m.groups()
        if _CLOSE[opening] != closing:
            raise DictionaryError(f"mismatched brackets around {name}")
        if opening == "[":
            lo, hi = 0, 1
        else:
            lo, hi = 1, 1
        if star:
            lo = int(lo_s) if lo_s else (1 if opening != "[" else 0)
            hi = int(hi_s) if hi_s else UNBOUNDED
        elif lo_s or hi_s:
            raise DictionaryError(f"bad qualifier before {name}")
        if name == ANY_AVP:
            allows_any = True
            continue
        elements.append(Element(name, lo, hi, opening == "<"))
    if rest[pos:].strip():
        raise DictionaryError(f"cannot read {rest[pos:].strip()!r}")
    return fields, Grammar(tuple(elements), allows_any)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DictionaryError(f"{what}: expected an integer, got {value!r}")
    return value


def build(documents: Iterable[tuple[str, Mapping[str, Any]]]) -> Dictionary:
    """Build one dictionary from parsed files, given as (file name, content)."""
    avps: dict[tuple[int, int], AvpDef] = {}
    by_name: dict[str, AvpDef] = {}
    raw_grammars: dict[str, tuple[str, str]] = {}
    commands_src: list[tuple[str, str, Mapping[str, Any]]] = []
    applications: dict[int, str] = {0: "Diameter Common Messages"}
    for fname, doc in documents:
        for app_name, app in (doc.get("applications") or {}).items():
            applications[_int(app.get("id"), f"{fname}: application {app_name}")] = str(app_name)
        for name, spec in (doc.get("avps") or {}).items():
            where = f"{fname}: AVP {name}"
            if not isinstance(spec, Mapping):
                raise DictionaryError(f"{where}: expected a mapping")
            unknown = set(spec) - {"code", "vendor", "type", "m", "v", "values", "grammar"}
            if unknown:
                raise DictionaryError(f"{where}: unknown keys {sorted(unknown)}")
            typ = spec.get("type")
            if typ not in AVP_TYPES:
                raise DictionaryError(f"{where}: type {typ!r} is not one of {sorted(AVP_TYPES)}")
            m, v = spec.get("m", "must"), spec.get("v", "mustnot")
            if m not in FLAG_RULES or v not in FLAG_RULES:
                raise DictionaryError(f"{where}: m/v must be one of {sorted(FLAG_RULES)}")
            values = {_int(val, f"{where}: value {k}"): str(k) for k, val in (spec.get("values") or {}).items()}
            d = AvpDef(str(name), _int(spec.get("code"), where), _int(spec.get("vendor", 0), where), typ, m, v, values)
            if d.key() in avps and avps[d.key()].name != d.name:
                raise DictionaryError(f"{where}: code {d.code}/{d.vendor} already defined as {avps[d.key()].name}")
            avps[d.key()] = by_name[d.name] = d
            if typ == "Grouped":
                if "grammar" not in spec:
                    raise DictionaryError(f"{where}: a Grouped AVP needs a grammar")
                raw_grammars[d.name] = (where, str(spec["grammar"]))
        for cname, spec in (doc.get("commands") or {}).items():
            commands_src.append((fname, str(cname), spec))
    for name, (where, text) in raw_grammars.items():
        try:
            _, grammar = parse_ccf(text)
        except DictionaryError as exc:
            raise DictionaryError(f"{where}: {exc}") from None
        _check_names(grammar, by_name, where)
        d = by_name[name]
        avps[d.key()] = by_name[name] = AvpDef(d.name, d.code, d.vendor, d.type, d.m, d.v, d.values, grammar)
    commands: dict[tuple[int, int], CommandDef] = {}
    for fname, cname, spec in commands_src:
        where = f"{fname}: command {cname}"
        try:
            rq_fields, rq = parse_ccf(str(spec["request"]))
            an_fields, an = parse_ccf(str(spec["answer"]))
        except (KeyError, DictionaryError) as exc:
            raise DictionaryError(f"{where}: {exc}") from None
        _check_names(rq, by_name, where)
        _check_names(an, by_name, where)
        code, app, rq_flags = _header_fields(rq_fields, where)
        code2, app2, an_flags = _header_fields(an_fields, where)
        if (code, app) != (code2, app2) or "REQ" not in rq_flags or "REQ" in an_flags:
            raise DictionaryError(f"{where}: request and answer headers disagree")
        ignored = frozenset(str(x) for x in spec.get("ignore_in_request") or ())
        unknown_names = ignored - set(by_name)
        if unknown_names:
            raise DictionaryError(f"{where}: ignore_in_request names unknown AVPs {sorted(unknown_names)}")
        commands[(app, code)] = CommandDef(cname, code, app, rq_flags, an_flags, rq, an, ignored)
    return Dictionary(avps, by_name, commands, applications)


def _header_fields(fields: list[str], where: str) -> tuple[int, int, frozenset[str]]:
    try:
        code = int(fields[0])
        flags = frozenset(f for f in fields[1:] if not f.isdigit())
        apps = [int(f) for f in fields[1:] if f.isdigit()]
    except (IndexError, ValueError):
        raise DictionaryError(f"{where}: bad header {fields}") from None
    if not flags <= {"REQ", "PXY", "ERR"} or len(apps) > 1:
        raise DictionaryError(f"{where}: bad header {fields}")
    return code, apps[0] if apps else 0, flags


def _check_names(grammar: Grammar, by_name: Mapping[str, AvpDef], where: str) -> None:
    for e in grammar.elements:
        if e.name not in by_name:
            raise DictionaryError(f"{where}: grammar names unknown AVP {e.name}")


def default_directory() -> Path:
    """The dictionaries shipped with s13eir: inside the wheel, or at the source checkout root."""
    packaged = Path(__file__).resolve().parent.parent / "_dictionaries"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "dictionaries"


def load(paths: Iterable[str | Path] = ()) -> Dictionary:
    """Load the shipped dictionaries plus any extra files or directories given."""
    files: list[Path] = sorted(default_directory().glob("*.yaml"))
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    docs: list[tuple[str, Mapping[str, Any]]] = []
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise DictionaryError(f"{f}: {exc}") from None
        if not isinstance(doc, Mapping):
            raise DictionaryError(f"{f}: expected a mapping at the top level")
        docs.append((str(f), doc))
    if not docs:
        raise DictionaryError(f"no dictionary files found in {default_directory()}")
    return build(docs)
