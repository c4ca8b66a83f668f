"""What a fresh clone installs is decided by the lock file, and the package says who it is."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

import s13eir

ROOT = Path(__file__).resolve().parent.parent


def _uv() -> str:
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (make installs it into .tools)")
    return found


def test_lock_file_is_in_step_with_pyproject() -> None:
    # uv's own check: it resolves pyproject.toml again (offline, from the lock and the
    # cache) and fails if uv.lock would change.
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    proc = subprocess.run(
        [_uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr


def test_lock_covers_the_supported_pythons_and_extras() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert lock["requires-python"] == project["requires-python"] == ">=3.11"
    # A universal lock: not resolved for one interpreter only.
    assert not lock.get("resolution-markers") or all("python_full_version" in m for m in lock["resolution-markers"])
    packages = {p["name"]: p for p in lock["package"]}
    ours = packages["s13eir"]
    assert set(ours.get("optional-dependencies", {})) >= {"test", "uvloop"}
    # Every locked distribution carries a hash, so an install is hash-checked.
    for name, pkg in packages.items():
        if name == "s13eir":
            continue
        files = [pkg["sdist"]] if "sdist" in pkg else []
        files += pkg.get("wheels", [])
        assert files and all(f.get("hash", "").startswith("sha256:") for f in files), name


def test_one_version_source() -> None:
    assert importlib.metadata.version("s13eir") == s13eir.__version__
    # The version is not written anywhere else.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]


def test_declared_licence_matches_the_licence_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    meta = importlib.metadata.metadata("s13eir")
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(u.startswith("Source,") for u in meta.get_all("Project-URL") or [])


def test_image_and_build_pin_what_they_install() -> None:
    # The Dockerfile installs with the pinned uv from the lock, never with an open range.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "uv sync" in dockerfile and "--locked" in dockerfile
    reqs = [
        line
        for line in (ROOT / "tools" / "uv-requirements.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    assert reqs and all("==" in line for line in reqs)
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["build-constraint-dependencies"]
    assert any(c.startswith("hatchling==") for c in build)
