"""Streaming parsers for list files, feeding a :class:`ListSink`.

Formats (the ``format:`` value in the configuration):

``dirbs-blacklist``
    CSV ``imei,block_date,reasons`` as exported by DIRBS: ``block_date`` is
    ``YYYYMMDD`` or empty, ``reasons`` are joined by ``|`` and kept as the entry
    detail. Rows go on the blacklist unless the spec names another list.
``dirbs-exceptions``
    CSV ``imei,imsi[,msisdn]``: IMEI+IMSI pairs (IMSI 5-15 digits, TS 23.003).
``csv``
    CSV ``imei,list,reason`` with ``list`` one of black, grey, white.
``tac-csv``
    CSV ``tac,list,reason`` with 8-digit TACs.
``range-csv``
    CSV ``from,to,list,reason`` with 14/15-digit IMEIs, ``from <= to``.
``rules-yaml``
    YAML ``{tac: [{tac, list, reason}], ranges: [{from, to, list, reason}]}``.

Every CSV format needs its header row (checked; surrounding whitespace, case and a
UTF-8 BOM are tolerated; the DIRBS formats may carry extra trailing columns). Blank
lines and lines starting with ``#`` are skipped. A malformed row raises
:class:`ListFormatError` with the file and 1-based line. Parsing feeds a sink row
by row (constant memory per row), so the caller loads into a fresh builder and
drops it on error: a bad file never half-replaces the lists being served.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

import yaml

from s13eir.decision.imei import normalize_imei, normalize_list_imei
from s13eir.decision.model import ListKind
from s13eir.lists.bloom import DEFAULT_FP_RATE
from s13eir.lists.progress import LoadProgress
from s13eir.lists.snapshot import ListSnapshot, SnapshotBuilder

__all__ = [
    "FORMATS",
    "ListFormatError",
    "ListSink",
    "ListSpec",
    "load_lists",
    "parse_list",
]

# libyaml's loader is ~10x faster; PyYAML without it still works.
_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_LIST_NAMES = {kind.value: kind for kind in ListKind}
_LIST_CHOICES = ", ".join(_LIST_NAMES)


class ListFormatError(Exception):
    """A list file that cannot be loaded; ``line`` is 1-based, 0 for the whole file."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class ListSpec:
    """One list file to load: where, in which format, and (for DIRBS lists) which list."""

    path: str
    format: str
    list: ListKind | None = None


class ListSink(Protocol):
    """Where parsed rows go: a :class:`SnapshotBuilder`, or an importer for another store."""

    def add_imei(self, imei14: str, kind: ListKind, source: str, detail: str = "") -> None: ...

    def add_exception(self, imei14: str, imsi: str, source: str) -> None: ...

    def add_tac(self, tac8: str, kind: ListKind, source: str, detail: str = "") -> None: ...

    def add_range(self, first14: str, last14: str, kind: ListKind, source: str, detail: str = "") -> None: ...


# -- field checks -----------------------------------------------------------------


def _is_digits(value: str, low: int, high: int) -> bool:
    return low <= len(value) <= high and value.isascii() and value.isdigit()


def _list_imei(path: str, line: int, value: str) -> str:
    imei = normalize_list_imei(value)
    if imei is None:
        raise ListFormatError(path, line, f"IMEI {value!r} is not 14-16 digits")
    return imei


def _range_imei(path: str, line: int, value: str) -> str:
    imei = normalize_imei(value.strip())
    if imei is None:
        raise ListFormatError(path, line, f"IMEI {value!r} is not 14 or 15 digits")
    return imei


def _list_kind(path: str, line: int, value: str) -> ListKind:
    kind = _LIST_NAMES.get(value.strip().lower())
    if kind is None:
        raise ListFormatError(path, line, f"list {value!r} is not one of {_LIST_CHOICES}")
    return kind


def _tac(path: str, line: int, value: str) -> str:
    value = value.strip()
    if not _is_digits(value, 8, 8):
        raise ListFormatError(path, line, f"TAC {value!r} is not 8 digits")
    return value


def _imsi(path: str, line: int, value: str) -> str:
    value = value.strip()
    if not _is_digits(value, 5, 15):
        raise ListFormatError(path, line, f"IMSI {value!r} is not 5-15 digits")
    return value


def _add_range(sink: ListSink, path: str, line: int, first: str, last: str, kind: ListKind, detail: str) -> None:
    first14, last14 = _range_imei(path, line, first), _range_imei(path, line, last)
    if first14 > last14:  # same length, so string order is numeric order
        raise ListFormatError(path, line, f"range {first.strip()}-{last.strip()}: 'from' is after 'to'")
    sink.add_range(first14, last14, kind, path, detail)


# -- CSV ----------------------------------------------------------------------------


def _uncomment(lines: TextIO) -> Iterator[str]:
    """Blank out comment lines (rather than dropping them) so csv's line_num stays exact."""
    for line in lines:
        if line.startswith("#") or (line[:1].isspace() and line.lstrip().startswith("#")):
            yield "\n"
        else:
            yield line


def _csv_rows(path: str, columns: tuple[str, ...], extra_columns: bool) -> Iterator[tuple[int, list[str]]]:
    """(line, row) for each data row, after checking the header row."""
    expected = ",".join(columns)
    try:
        f = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below; generator
    except OSError as exc:
        raise ListFormatError(path, 0, f"cannot read: {exc.strerror or exc}") from exc
    with f:
        reader = csv.reader(_uncomment(f), strict=True)
        width = 0
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if not width:
                    header = tuple(cell.strip().lower() for cell in row)
                    if header[: len(columns)] != columns or (len(header) > len(columns) and not extra_columns):
                        raise ListFormatError(
                            path, reader.line_num, f"header is {','.join(header)!r}, expected {expected!r}"
                        )
                    width = len(header)
                    continue
                if len(row) != width:
                    raise ListFormatError(path, reader.line_num, f"{len(row)} columns, expected {width} ({expected})")
                yield reader.line_num, row
        except csv.Error as exc:
            raise ListFormatError(path, reader.line_num, f"CSV syntax error: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ListFormatError(path, reader.line_num + 1, "not valid UTF-8") from exc
        except OSError as exc:
            raise ListFormatError(path, reader.line_num, f"read error: {exc.strerror or exc}") from exc
        if not width:
            raise ListFormatError(path, reader.line_num, f"no header row (expected {expected!r})")


def _parse_dirbs_blacklist(spec: ListSpec, sink: ListSink) -> int:
    path, kind = spec.path, spec.list or ListKind.BLACK
    rows = 0
    for line, row in _csv_rows(path, ("imei", "block_date", "reasons"), extra_columns=True):
        imei = _list_imei(path, line, row[0])
        block_date = row[1].strip()
        if block_date and not _is_digits(block_date, 8, 8):
            raise ListFormatError(path, line, f"block_date {row[1]!r} is not YYYYMMDD")
        sink.add_imei(imei, kind, path, row[2].strip())
        rows += 1
    return rows


def _parse_dirbs_exceptions(spec: ListSpec, sink: ListSink) -> int:
    path = spec.path
    rows = 0
    for line, row in _csv_rows(path, ("imei", "imsi"), extra_columns=True):
        sink.add_exception(_list_imei(path, line, row[0]), _imsi(path, line, row[1]), path)
        rows += 1
    return rows


def _parse_csv(spec: ListSpec, sink: ListSink) -> int:
    path = spec.path
    rows = 0
    for line, row in _csv_rows(path, ("imei", "list", "reason"), extra_columns=False):
        sink.add_imei(_list_imei(path, line, row[0]), _list_kind(path, line, row[1]), path, row[2].strip())
        rows += 1
    return rows


def _parse_tac_csv(spec: ListSpec, sink: ListSink) -> int:
    path = spec.path
    rows = 0
    for line, row in _csv_rows(path, ("tac", "list", "reason"), extra_columns=False):
        sink.add_tac(_tac(path, line, row[0]), _list_kind(path, line, row[1]), path, row[2].strip())
        rows += 1
    return rows


def _parse_range_csv(spec: ListSpec, sink: ListSink) -> int:
    path = spec.path
    rows = 0
    for line, row in _csv_rows(path, ("from", "to", "list", "reason"), extra_columns=False):
        _add_range(sink, path, line, row[0], row[1], _list_kind(path, line, row[2]), row[3].strip())
        rows += 1
    return rows


# -- YAML ---------------------------------------------------------------------------

_RULE_FIELDS = {
    "tac": (("tac", "list"), ("reason",)),
    "ranges": (("from", "to", "list"), ("reason",)),
}


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(path: str, node: yaml.Node, what: str) -> str:
    """The text of a scalar as written; raw text keeps TACs like 01234567 intact."""
    if not isinstance(node, yaml.ScalarNode):
        raise ListFormatError(path, _line(node), f"{what} must be a single value")
    if node.tag.endswith(":null"):
        return ""
    return str(node.value)


def _rule_fields(path: str, node: yaml.Node, section: str) -> dict[str, str]:
    required, optional = _RULE_FIELDS[section]
    if not isinstance(node, yaml.MappingNode):
        raise ListFormatError(path, _line(node), f"each '{section}' item must be a mapping")
    fields: dict[str, str] = {}
    for key_node, value_node in node.value:
        key = _scalar(path, key_node, "a key")
        if key not in required and key not in optional:
            raise ListFormatError(
                path, _line(key_node), f"unknown key {key!r} in '{section}' (allowed: {', '.join(required + optional)})"
            )
        if key in fields:
            raise ListFormatError(path, _line(key_node), f"duplicate key {key!r}")
        fields[key] = _scalar(path, value_node, repr(key))
    missing = [k for k in required if k not in fields]
    if missing:
        raise ListFormatError(path, _line(node), f"'{section}' item lacks {', '.join(missing)}")
    return fields


def _parse_rules_yaml(spec: ListSpec, sink: ListSink) -> int:
    path = spec.path
    try:
        with open(path, encoding="utf-8") as f:
            root = yaml.compose(f, Loader=_YamlLoader)
    except OSError as exc:
        raise ListFormatError(path, 0, f"cannot read: {exc.strerror or exc}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ListFormatError(path, mark.line + 1 if mark else 0, f"YAML error: {exc.problem}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ListFormatError(path, 0, f"YAML error: {exc}") from exc
    if root is None:
        return 0  # an empty file: no rules
    if not isinstance(root, yaml.MappingNode):
        raise ListFormatError(path, _line(root), "expected a mapping with 'tac' and/or 'ranges'")
    rows = 0
    seen: set[str] = set()
    for key_node, section_node in root.value:
        section = _scalar(path, key_node, "a key")
        if section not in _RULE_FIELDS:
            raise ListFormatError(path, _line(key_node), f"unknown section {section!r} (allowed: tac, ranges)")
        if section in seen:
            raise ListFormatError(path, _line(key_node), f"duplicate section {section!r}")
        seen.add(section)
        if isinstance(section_node, yaml.ScalarNode) and section_node.tag.endswith(":null"):
            continue  # "tac:" with nothing under it
        if not isinstance(section_node, yaml.SequenceNode):
            raise ListFormatError(path, _line(section_node), f"'{section}' must be a list")
        for item in section_node.value:
            line = _line(item)
            fields = _rule_fields(path, item, section)
            kind = _list_kind(path, line, fields["list"])
            detail = fields.get("reason", "").strip()
            if section == "tac":
                sink.add_tac(_tac(path, line, fields["tac"]), kind, path, detail)
            else:
                _add_range(sink, path, line, fields["from"], fields["to"], kind, detail)
            rows += 1
    return rows


# -- entry points -------------------------------------------------------------------

FORMATS: dict[str, Callable[[ListSpec, ListSink], int]] = {
    "dirbs-blacklist": _parse_dirbs_blacklist,
    "dirbs-exceptions": _parse_dirbs_exceptions,
    "csv": _parse_csv,
    "tac-csv": _parse_tac_csv,
    "range-csv": _parse_range_csv,
    "rules-yaml": _parse_rules_yaml,
}

# Only dirbs-blacklist takes its list from the spec; the others name the list per row
# (or are exceptions), so a spec list there would be silently ignored: refuse it.
_SPEC_LIST_FORMATS = frozenset({"dirbs-blacklist"})


def parse_list(spec: ListSpec, sink: ListSink) -> int:
    """Parse one list file into ``sink``; returns the number of rows read."""
    parser = FORMATS.get(spec.format)
    if parser is None:
        raise ListFormatError(spec.path, 0, f"unknown list format {spec.format!r} (known: {', '.join(FORMATS)})")
    if spec.list is not None and spec.format not in _SPEC_LIST_FORMATS:
        raise ListFormatError(
            spec.path, 0, f"format {spec.format!r} does not take a list kind (got {spec.list.value!r})"
        )
    return parser(spec, sink)


def load_lists(
    specs: Sequence[ListSpec], bloom_fp_rate: float = DEFAULT_FP_RATE, progress: LoadProgress | None = None
) -> ListSnapshot:
    """Parse every file into a new snapshot; raises ListFormatError on the first bad row.

    ``progress``, when given, follows the load (file, entries so far, indexing) for
    another thread to report: see :mod:`s13eir.lists.loading`.
    """
    builder = SnapshotBuilder()
    if progress is not None:
        progress.begin(len(specs), builder)
    for i, spec in enumerate(specs):
        if progress is not None:
            progress.reading(i, spec.path)
        parse_list(spec, builder)
    if progress is not None:
        progress.indexing()
    return builder.build(bloom_fp_rate)
