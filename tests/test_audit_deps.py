"""tools/audit_deps.py evaluates OSV advisories as OSV does: ranges, listed versions,
several introduced/fixed pairs, last_affected, open ranges and withdrawn advisories."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("audit_deps", ROOT / "tools" / "audit_deps.py")
assert spec is not None and spec.loader is not None
audit: Any = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

# The shape of PYSEC-2023-45 (redis-py, CVE-2023-28858): three introduced/fixed pairs.
REDIS = {
    "id": "PYSEC-2023-45",
    "aliases": ["CVE-2023-28858"],
    "affected": [{
        "package": {"name": "redis", "ecosystem": "PyPI"},
        "ranges": [{"type": "ECOSYSTEM", "events": [
            {"introduced": "4.2.0"}, {"fixed": "4.3.6"},
            {"introduced": "4.4.0"}, {"fixed": "4.4.3"},
            {"introduced": "4.5.0"}, {"fixed": "4.5.3"},
        ]}],
        "versions": ["4.2.0rc1"],
    }],
}  # fmt: skip


@pytest.mark.parametrize(
    ("version", "hit"),
    [("4.1.4", False), ("4.2.0", True), ("4.3.5", True), ("4.3.6", False), ("4.4.2", True), ("4.4.3", False),
     ("4.5.2", True), ("4.5.3", False), ("8.2.0", False), ("4.2.0rc1", True)],
)  # fmt: skip
def test_ranges(version: str, hit: bool) -> None:
    assert audit.affects(REDIS, "redis", version) is hit


def test_open_ranges_last_affected_and_other_packages() -> None:
    events: list[dict[str, str]] = [{"introduced": "0"}]
    open_range = {"affected": [{"package": {"name": "h2"}, "ranges": [{"type": "ECOSYSTEM", "events": events}]}]}
    assert audit.affects(open_range, "h2", "4.4.1")
    last = {"affected": [{"package": {"name": "h2"}, "ranges": [{"type": "ECOSYSTEM", "events": [
        {"introduced": "1.0"}, {"last_affected": "4.1.0"}]}]}]}  # fmt: skip
    assert audit.affects(last, "h2", "4.1.0") and not audit.affects(last, "h2", "4.1.1")
    assert not audit.affects(REDIS, "hiredis", "4.3.0")


def test_offline_database_skips_withdrawn(tmp_path: Path) -> None:
    d = tmp_path / "vulns" / "redis"
    d.mkdir(parents=True)
    (d / "PYSEC-2023-45.yaml").write_text(yaml.safe_dump(REDIS))
    (d / "PYSEC-0000-1.yaml").write_text(yaml.safe_dump({**REDIS, "id": "PYSEC-0000-1", "withdrawn": "2024-01-01"}))
    assert audit.offline(tmp_path, "redis", "4.5.2") == ["PYSEC-2023-45 (CVE-2023-28858)"]
    assert audit.offline(tmp_path, "redis", "8.2.0") == []


def test_every_pin_is_listed() -> None:
    pins = dict(audit.locked())
    assert {"redis", "structlog", "python-diameter", "aiomqtt", "uv"} <= pins.keys()
