"""Check every package pinned in uv.lock against the published advisories, two ways:

- PyPI's JSON API (``/pypi/NAME/json``): its ``vulnerabilities`` are the advisories
  (from OSV) that affect the project's *latest* release, so they answer for every
  package pinned at its latest release;
- an offline copy of the PyPA advisory database (``git clone
  https://github.com/pypa/advisory-database``; OSV format, the source of OSV's PyPI
  data), evaluated here for the exact pinned version: ranges (introduced / fixed /
  last_affected) and listed versions; withdrawn advisories are skipped.

    python tools/audit_deps.py [--advisories DIR] [--offline]

Prints one line per package and exits 1 when any pinned version is affected. pip-audit
would do the same through per-version JSON or OSV's API, neither reachable from every
build host; this needs only the lock file, and either source.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent


def locked() -> list[tuple[str, str]]:
    """Every registry package of uv.lock, and uv itself (tools/uv-requirements.txt)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pins = {(p["name"], p["version"]) for p in lock["package"] if p.get("source", {}).get("registry")}
    for line in (ROOT / "tools" / "uv-requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, rest = line.partition("==")
            pins.add((name.strip().lower(), rest.split()[0].rstrip("\\").strip()))
    return sorted(pins)


def _v(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def affects(advisory: dict[str, Any], name: str, version: str) -> bool:
    """Whether an OSV advisory affects ``name`` at ``version``."""
    v = _v(version)
    for aff in advisory.get("affected", []):
        if aff.get("package", {}).get("name", "").lower().replace("_", "-") != name:
            continue
        if version in aff.get("versions", []):
            return True
        if v is None:
            continue
        for rng in aff.get("ranges", []):
            if rng.get("type") != "ECOSYSTEM":
                continue
            inside = False
            for event in rng.get("events", []):
                if "introduced" in event:
                    start = event["introduced"]
                    inside = start == "0" or ((s := _v(start)) is not None and v >= s)
                elif "fixed" in event and inside:
                    fixed = _v(event["fixed"])
                    if fixed is not None and v < fixed:
                        return True
                    inside = False
                elif "last_affected" in event and inside:
                    last = _v(event["last_affected"])
                    if last is not None and v <= last:
                        return True
                    inside = False
            if inside:  # introduced with no fix yet
                return True
    return False


def offline(db: Path, name: str, version: str) -> list[str]:
    found = []
    for path in sorted((db / "vulns" / name).glob("*.yaml")):
        advisory = yaml.safe_load(path.read_text())
        if advisory.get("withdrawn"):
            continue
        if affects(advisory, name, version):
            found.append(f"{advisory['id']} ({', '.join(advisory.get('aliases', []))})")
    return found


def pypi(name: str) -> tuple[str, list[str]] | None:
    """(latest version, advisories affecting it), or None when PyPI cannot be asked."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=20) as r:
            data = json.load(r)
    except OSError:
        return None
    vulns = [f"{v['id']} ({', '.join(v.get('aliases', []))})" for v in data.get("vulnerabilities", [])
             if not v.get("withdrawn")]  # fmt: skip
    return str(data["info"]["version"]), vulns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--advisories", type=Path, help="a checkout of github.com/pypa/advisory-database")
    ap.add_argument("--offline", action="store_true", help="do not ask PyPI")
    args = ap.parse_args()
    db_date = ""
    if args.advisories is not None:
        out = subprocess.run(["git", "-C", str(args.advisories), "log", "-1", "--format=%cs"],
                             capture_output=True, text=True, check=False)  # fmt: skip
        db_date = out.stdout.strip() or "undated"
        print(f"advisory database: {args.advisories} ({db_date})")
    affected = unchecked = 0
    for name, version in locked():
        sources, hits = [], []
        latest = None if args.offline else pypi(name)
        if latest is not None:
            if latest[0] == version:
                sources.append("PyPI (latest release)")
                hits += latest[1]
            else:
                sources.append(f"PyPI: latest is {latest[0]}, not checked there")
        if args.advisories is not None:
            sources.append(f"advisory database {db_date}")
            hits += [h for h in offline(args.advisories, name, version) if h not in hits]
        checked = (latest is not None and latest[0] == version) or args.advisories is not None
        unchecked += not checked
        affected += bool(hits)
        state = "AFFECTED: " + "; ".join(hits) if hits else ("no advisory" if checked else "NOT CHECKED")
        print(f"{name} {version}: {state} [{'; '.join(sources) or 'no source'}]")
    print(f"{affected} affected, {unchecked} not checked")
    sys.exit(1 if affected else 0)


if __name__ == "__main__":
    main()
