"""List-file parsers, error reporting, and the sample lists in config/lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s13eir.decision.engine import decide
from s13eir.decision.imei import normalize_imei
from s13eir.decision.model import Entry, EquipmentStatus, ExceptionEntry, ListKind, Rule, UnknownPolicy
from s13eir.lists.formats import FORMATS, ListFormatError, ListSpec, load_lists, parse_list
from s13eir.lists.snapshot import SnapshotBuilder

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "lists"
B, G, W = ListKind.BLACK, ListKind.GREY, ListKind.WHITE


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


# -- each format ---------------------------------------------------------------------


def test_dirbs_blacklist(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "black.csv",
        "# exported 2024-03-01\n"
        "imei,block_date,reasons\n"
        "35209900176148,20240301,IMEI found on local stolen list\n"
        "\n"
        "352099001761551,,duplicate IMEI|stolen\n"
        "  # indented comment\n"
        "3520990017616201,20240302,\n",
    )
    snapshot = load_lists([ListSpec(path, "dirbs-blacklist")])
    assert snapshot.counts()["black"] == 3
    assert snapshot.facts("35209900176148", None).imei == (
        Entry(B, path, "35209900176148", "IMEI found on local stolen list"),
    )
    assert snapshot.facts("35209900176155", None).imei[0].detail == "duplicate IMEI|stolen"
    assert snapshot.facts("35209900176162", None).imei[0].detail == ""


def test_dirbs_blacklist_can_load_another_list(tmp_path: Path) -> None:
    path = write(tmp_path, "grey.csv", "imei,block_date,reasons,extra\n35209900176148,,pending,x\n")
    snapshot = load_lists([ListSpec(path, "dirbs-blacklist", G)])
    assert snapshot.counts() == {"black": 0, "grey": 1, "white": 0, "exceptions": 0, "tac": 0, "ranges": 0}


def test_dirbs_exceptions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exc.csv",
        "imei,imsi,msisdn\n35209900176148,001010000000001,15550100001\n352099001761481,00101,\n",
    )
    snapshot = load_lists([ListSpec(path, "dirbs-exceptions")])
    assert snapshot.counts()["exceptions"] == 2
    assert snapshot.facts("35209900176148", "00101").exception == ExceptionEntry("35209900176148", "00101", path)
    two_columns = write(tmp_path, "exc2.csv", "imei,imsi\n35209900176148,001010000000001\n")
    assert load_lists([ListSpec(two_columns, "dirbs-exceptions")]).counts()["exceptions"] == 1


def test_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ops.csv",
        'imei,list,reason\n35209900176148,black,stolen\n35209900176155, Grey ,"a, b"\n35209900176162,white,\n',
    )
    snapshot = load_lists([ListSpec(path, "csv")])
    assert snapshot.counts() == {"black": 1, "grey": 1, "white": 1, "exceptions": 0, "tac": 0, "ranges": 0}
    assert snapshot.facts("35209900176155", None).imei == (Entry(G, path, "35209900176155", "a, b"),)


def test_tac_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "tac.csv", "tac,list,reason\n01234567,black,fake model\n35209900,grey,\n")
    snapshot = load_lists([ListSpec(path, "tac-csv")])
    assert snapshot.facts("01234567000000", None).tac == (Entry(B, path, "01234567", "fake model"),)
    assert snapshot.counts()["tac"] == 2


def test_range_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ranges.csv",
        "from,to,list,reason\n356987000000008,35698700009999,grey,refurbished\n35698700005000,35698700005000,black,\n",
    )
    snapshot = load_lists([ListSpec(path, "range-csv")])
    assert {e.key for e in snapshot.facts("35698700005000", None).range} == {
        "35698700000000-35698700009999",
        "35698700005000-35698700005000",
    }
    assert snapshot.facts("35698700010000", None).range == ()


def test_rules_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.yaml",
        "# rules\n"
        "tac:\n"
        "  - {tac: 01234567, list: black, reason: unquoted TAC keeps its leading zero}\n"
        "  - tac: '35209900'\n"
        "    list: white\n"
        "ranges:\n"
        "  - from: 35698700000000\n"
        "    to: '356987000099992'\n"
        "    list: grey\n"
        "    reason: ~\n",
    )
    snapshot = load_lists([ListSpec(path, "rules-yaml")])
    assert snapshot.counts()["tac"] == 2
    assert snapshot.counts()["ranges"] == 1
    assert snapshot.facts("01234567000000", None).tac[0].list is B
    assert snapshot.facts("35698700000001", None).range == (Entry(G, path, "35698700000000-35698700009999", ""),)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "tac:\nranges: []\n"])
def test_rules_yaml_may_be_empty(tmp_path: Path, text: str) -> None:
    assert parse_list(ListSpec(write(tmp_path, "r.yaml", text), "rules-yaml"), SnapshotBuilder()) == 0


def test_bom_whitespace_and_case_in_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", " IMEI , list ,Reason\r\n35209900176148,black,x\r\n", encoding="utf-8-sig")
    assert load_lists([ListSpec(path, "csv")]).counts()["black"] == 1


def test_header_only_file_is_an_empty_list(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.csv", "# no rows today\nimei,block_date,reasons\n")
    assert parse_list(ListSpec(path, "dirbs-blacklist"), SnapshotBuilder()) == 0


def test_several_files_share_one_snapshot_and_record_their_path(tmp_path: Path) -> None:
    black = write(tmp_path, "b.csv", "imei,block_date,reasons\n35209900176148,,stolen\n")
    white = write(tmp_path, "w.csv", "imei,list,reason\n35209900176148,white,vip\n")
    snapshot = load_lists([ListSpec(black, "dirbs-blacklist"), ListSpec(white, "csv")])
    facts = snapshot.facts("35209900176148", None)
    assert {(e.list, e.source) for e in facts.imei} == {(B, black), (W, white)}
    assert decide(facts, None, UnknownPolicy.WHITELISTED, "35209900176148").status == EquipmentStatus.BLACKLISTED


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "line", "message"),
    [
        (
            "dirbs-blacklist",
            "imei,block_date,reasons\n# c\n\n3520990017614X,,x\n",
            4,
            "IMEI '3520990017614X' is not 14-16 digits",
        ),
        (
            "dirbs-blacklist",
            "imei,block_date,reasons\n35209900176148,2024-03-01,x\n",
            2,
            "block_date '2024-03-01' is not YYYYMMDD",
        ),
        ("dirbs-blacklist", "imei,block_date,reasons\n35209900176148,x\n", 2, "2 columns, expected 3"),
        ("dirbs-blacklist", "imei,reasons,block_date\n", 1, "header is 'imei,reasons,block_date'"),
        ("dirbs-blacklist", "35209900176148,20240301,stolen\n", 1, "header is"),
        ("dirbs-blacklist", "# only a comment\n", 1, "no header row"),
        ("dirbs-exceptions", "imei,imsi\n35209900176148,0010\n", 2, "IMSI '0010' is not 5-15 digits"),
        (
            "dirbs-exceptions",
            "imei,imsi\n35209900176148,0010100000000011\n",
            2,
            "IMSI '0010100000000011' is not 5-15 digits",
        ),
        (
            "dirbs-exceptions",
            "imei,imsi\n3520990017614,001010000000001\n",
            2,
            "IMEI '3520990017614' is not 14-16 digits",
        ),
        (
            "csv",
            "imei,list,reason\n35209900176148,black,x\n35209900176155,blue,x\n",
            3,
            "list 'blue' is not one of black, grey, white",
        ),
        ("csv", "imei,list,reason\n35209900176148,black\n", 2, "2 columns, expected 3"),
        ("csv", "imei,list,reason\n35209900176148,black,x,y\n", 2, "4 columns, expected 3"),
        ("csv", "imei,list,reason,extra\n", 1, "header is"),
        ("csv", "imei,list,reason\n٣٥٢٠٩٩٠٠١٧٦١٤٨,black,x\n", 2, "is not 14-16 digits"),
        ("tac-csv", "tac,list,reason\n3520990,black,x\n", 2, "TAC '3520990' is not 8 digits"),
        ("range-csv", "from,to,list,reason\n35209900000009,35209900000001,grey,x\n", 2, "'from' is after 'to'"),
        (
            "range-csv",
            "from,to,list,reason\n3520990000000,35209900000001,grey,x\n",
            2,
            "IMEI '3520990000000' is not 14 or 15 digits",
        ),
        ("range-csv", 'from,to,list,reason\n35209900000000,"35209900000001\n', 2, "CSV syntax error"),
        ("csv", 'imei,list,reason\n35209900176148,black,"x"y\n', 2, "CSV syntax error"),
    ],
)
def test_bad_rows_report_file_and_line(tmp_path: Path, fmt: str, text: str, line: int, message: str) -> None:
    path = write(tmp_path, "list.csv", text)
    with pytest.raises(ListFormatError) as info:
        parse_list(ListSpec(path, fmt), SnapshotBuilder())
    err = info.value
    assert (err.path, err.line) == (path, line)
    assert message in err.message
    assert str(err).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("tac:\n  - {tac: '3520990', list: black}\n", 2, "TAC '3520990' is not 8 digits"),
        ("tac:\n  - {tac: '35209900', list: pink}\n", 2, "list 'pink'"),
        ("tac:\n  - tac: '35209900'\n    reason: x\n", 2, "lacks list"),
        ("tac:\n  - tac: '35209900'\n    list: black\n    colour: red\n", 4, "unknown key 'colour'"),
        ("tac:\n  - tac: [1, 2]\n    list: black\n", 2, "must be a single value"),
        ("ranges:\n  - {from: '35209900000009', to: '35209900000001', list: grey}\n", 2, "'from' is after 'to'"),
        ("ranges:\n  - {from: '1', to: '35209900000001', list: grey}\n", 2, "IMEI '1' is not 14 or 15 digits"),
        ("ranges: {from: 1}\n", 1, "'ranges' must be a list"),
        ("\n\nimeis: []\n", 3, "unknown section 'imeis'"),
        ("- 1\n", 1, "expected a mapping"),
        ("tac: [\n  {tac: '35209900'\n", 3, "YAML error"),
    ],
)
def test_bad_yaml_reports_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, "rules.yaml", text)
    with pytest.raises(ListFormatError) as info:
        parse_list(ListSpec(path, "rules-yaml"), SnapshotBuilder())
    assert (info.value.path, info.value.line) == (path, line)
    assert message in info.value.message


def test_file_level_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "l.csv", "imei,list,reason\n")
    with pytest.raises(ListFormatError, match="unknown list format 'xml'") as info:
        load_lists([ListSpec(path, "xml")])
    assert info.value.line == 0
    assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(ListFormatError, match="does not take a list kind"):
        load_lists([ListSpec(path, "csv", B)])
    with pytest.raises(ListFormatError, match="cannot read") as info:
        load_lists([ListSpec(str(tmp_path / "missing.csv"), "csv")])
    assert info.value.line == 0
    bad_utf8 = tmp_path / "latin1.csv"
    bad_utf8.write_bytes(b"imei,list,reason\n35209900176148,black,r\xe9sum\xe9\n")
    with pytest.raises(ListFormatError, match="UTF-8"):
        load_lists([ListSpec(str(bad_utf8), "csv")])


def test_a_bad_row_in_a_later_file_fails_the_whole_load(tmp_path: Path) -> None:
    good = write(tmp_path, "good.csv", "imei,list,reason\n35209900176148,black,x\n")
    bad = write(tmp_path, "bad.csv", "imei,list,reason\n35209900176155,black,x\n35209900176162,purple,x\n")
    with pytest.raises(ListFormatError) as info:
        load_lists([ListSpec(good, "csv"), ListSpec(bad, "csv")])
    assert (info.value.path, info.value.line) == (bad, 3)


def test_every_format_is_documented() -> None:
    import s13eir.lists.formats as formats

    for name in FORMATS:
        assert f"``{name}``" in (formats.__doc__ or "")


# -- the sample lists ----------------------------------------------------------------

SAMPLE_SPECS = [
    ListSpec(str(SAMPLES / "blacklist.csv"), "dirbs-blacklist"),
    ListSpec(str(SAMPLES / "greylist.csv"), "csv"),
    ListSpec(str(SAMPLES / "exceptions.csv"), "dirbs-exceptions"),
    ListSpec(str(SAMPLES / "rules.yaml"), "rules-yaml"),
]
_ROW = re.compile(r"^\|\s*(\d{14})\s*\|\s*(\d{15})\s*\|\s*([\d-]+)\s*\|\s*(\w+)\s*\|\s*(\w+)\s*\|")


def documented_verdicts() -> list[tuple[str, str, str | None, str, str]]:
    rows = []
    for text in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        m = _ROW.match(text)
        if m:
            key, full, imsi, status, rule = m.groups()
            rows.append((key, full, None if imsi == "-" else imsi, status, rule))
    return rows


def test_sample_readme_lists_enough_cases() -> None:
    rules = {rule for *_, rule in documented_verdicts()}
    assert rules == {"imei", "exception", "tac", "range", "policy"}


@pytest.mark.parametrize(("key", "full", "imsi", "status", "rule"), documented_verdicts())
def test_sample_lists_give_the_documented_verdicts(
    key: str, full: str, imsi: str | None, status: str, rule: str
) -> None:
    from s13eir.decision.imei import luhn_check_digit

    assert full == key + str(luhn_check_digit(key))
    assert normalize_imei(full) == key
    snapshot = load_lists(SAMPLE_SPECS)
    verdict = decide(snapshot.facts(key, imsi), imsi, UnknownPolicy.WHITELISTED, key)
    assert verdict.status == EquipmentStatus[status]
    assert verdict.reason.rule == Rule(rule)


def test_sample_lists_counts() -> None:
    snapshot = load_lists(SAMPLE_SPECS)
    assert snapshot.counts() == {"black": 5, "grey": 3, "white": 1, "exceptions": 1, "tac": 1, "ranges": 1}
