"""The GSMA TAC database file, and the rules that read it (unexpected technology,
TAC not found) in the core and in ``s13eir detect --tacs``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from s13eir.detection.detector import Detector
from s13eir.detection.observation import Observation, Rat
from s13eir.detection.rules import DAY_S, DetectionConfig
from s13eir.detection.tac_db import TacFileError, radio_accesses, read_tac_file
from tests.detection.test_trace import detect

HEADER = (
    "TAC|Marketing Name|Internal Model Name|Manufacturer|Bands|Allocation Date|Country Code|Fixed Code|"
    "Manufacturer Code|Radio Interface|Brand Name|Model Name|Operating System|NFC|Bluetooth|WLAN|Device Type"
)
ROWS = [
    "35209900|Phone S|SM-S1|Example Mobile|GSM 900,GSM 1800,WCDMA FDD Band I,LTE FDD BAND 3|01-Jan-2020|"
    "US|Not Known|X|LTE|Example|S1|Android|Y|Y|Y|Smartphone",
    "35450712|Not Known|FP-1|Feature Works|GSM 900,GSM 1800|15-Mar-2012|FI|Not Known|Y|NONE|FW|FP 1|"
    "Not Known|N|Y|N|Feature phone",
    "86000001|Router 5|R5|Net Co|LTE FDD BAND 1,NR BAND n78|02-Feb-2023|CN|Not Known|Z|5G|Net|R5|Linux|N|N|Y|Modem",
]


def tac_file(*rows: str) -> list[str]:
    return [HEADER + "\n", *(r + "\n" for r in rows)]


def test_the_file_reads_as_entries() -> None:
    db = read_tac_file(tac_file(*ROWS), "tacs.txt")
    assert len(db) == 3
    phone = db.entry("35209900")
    assert phone is not None and phone.manufacturer == "Example Mobile" and phone.allocated == date(2020, 1, 1)
    assert phone.info.model == "Phone S" and phone.info.device_type == "Smartphone"
    assert phone.info.rats == {Rat.GERAN_UTRAN, Rat.EUTRAN}
    feature = db.info("35450712")
    assert feature is not None and feature.model == "FP 1" and feature.rats == {Rat.GERAN_UTRAN}  # Not Known -> Model
    assert db.info("86000001") is not None and db.info("86000001").rats == {Rat.EUTRAN, Rat.NR}  # type: ignore[union-attr]
    assert db.info("99999999") is None


def test_radio_accesses_from_the_band_names() -> None:
    assert radio_accesses("GSM 850,GSM 1900") == {Rat.GERAN_UTRAN}
    assert radio_accesses("CDMA2000 800, HSPA+") == {Rat.GERAN_UTRAN}
    assert radio_accesses("", "Not Known") == frozenset()


@pytest.mark.parametrize(
    ("rows", "line", "message"),
    [
        (["3520990|X|X|M|GSM 900|01-Jan-2020|US|X|X|X|X|X|X|X|X|X|Phone"], 2, "8 digits"),
        ([ROWS[0], ROWS[0]], 3, "twice"),
        ([ROWS[0].replace("01-Jan-2020", "2020-01-01")], 2, "DD-Mon-YYYY"),
        ([ROWS[0].replace("Example Mobile", "Not Known")], 2, "Manufacturer is empty"),
        ([ROWS[0] + "|extra"], 2, "fields"),
    ],
)
def test_a_bad_row_is_refused_with_its_line(rows: list[str], line: int, message: str) -> None:
    with pytest.raises(TacFileError) as err:
        read_tac_file(tac_file(*rows), "tacs.txt")
    assert err.value.line == line and message in err.value.message


def test_a_header_without_the_mandatory_columns_is_refused() -> None:
    with pytest.raises(TacFileError, match="lacks Device Type"):
        read_tac_file(["TAC|Manufacturer|Bands|Allocation Date\n"], "tacs.txt")


def test_the_tac_rules_in_the_core() -> None:
    db = read_tac_file(tac_file(*ROWS), "tacs.txt")
    d = Detector(DetectionConfig(enabled=True), {}, db.info)
    # The feature phone (2G/3G only) on LTE.
    (tech,) = d.observe(Observation(0, "35450712000017", "214010000000001", "mme", Rat.EUTRAN), 0)
    assert tech.rule == "unexpected_technology" and "FP 1" in tech.detail
    # A TAC not in the database: nothing while the publication delay runs (RBI 35: 20 days) ...
    unknown = "35111111000011"
    assert d.observe(Observation(0, unknown, "214010000000002", "mme", Rat.EUTRAN), 0) == []
    assert d.observe(Observation(19 * DAY_S, unknown, "214010000000002", "mme", Rat.EUTRAN), 19 * DAY_S) == []
    (late,) = d.observe(Observation(20 * DAY_S, unknown, "214010000000002", "mme", Rat.EUTRAN), 20 * DAY_S)
    assert late.rule == "tac_not_found" and "35111111" in late.detail
    # ... and a TAC that is there trips neither.
    assert d.observe(Observation(0, "35209900176148", "214010000000003", "mme", Rat.EUTRAN), 0) == []


def test_detect_with_a_tac_database(tmp_path: Path) -> None:
    tacs = tmp_path / "tacs.txt"
    tacs.write_text("".join(tac_file(*ROWS)))
    trace = tmp_path / "trace.csv"
    trace.write_text("t,imei,imsi,peer\n0,35450712000017,214010000000001,mme-mad\n")
    r = detect(tmp_path, trace, "--tacs", str(tacs), "--json")
    assert r.returncode == 0, r.stderr
    (case,) = json.loads(r.stdout)["cases"]
    assert case["rules"] == {"unexpected_technology": 1}
    assert (case["model"], case["device_type"]) == ("FP 1", "Feature phone")
    tacs.write_text(HEADER + "\n" + ROWS[0].replace("35209900", "3520990X") + "\n")
    bad = detect(tmp_path, trace, "--tacs", str(tacs))
    assert bad.returncode == 2 and f"{tacs}:2: TAC" in bad.stderr
