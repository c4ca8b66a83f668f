"""The files a configuration names (dictionaries, lists, snapshots, TLS and OAuth2 keys,
CA files), whether the node reads each one, and which of them cannot be read: what
``s13eir config check`` and ``serve`` check before anything starts."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import NamedTuple

from .config import Config, ConfigError


class NamedFile(NamedTuple):
    """A file named by a configuration."""

    key: str  # the setting that names it: "sbi.certfile", "store.lists[0].path"
    path: str  # as load_config resolved it (relative names: from the configuration's directory)
    read_by_node: bool  # `s13eir serve` reads it (not: only `s13eir sync` does, or its section is off)
    directory_ok: bool = False  # a directory of files will do (diameter.dictionaries)


class FileProblem(NamedTuple):
    file: NamedFile
    problem: str  # "no such file", "permission denied", ...


class FilesMissing(ConfigError):
    """Files named by a configuration that cannot be read; one line per file,
    ``"<config>: <key>: <path>: <problem>"``."""

    def __init__(self, source: str, problems: Sequence[FileProblem]) -> None:
        lines = [f"{p.file.key}: {p.file.path}: {p.problem}" for p in problems]
        super().__init__(source, f"\n{source}: ".join(lines))
        self.problems = tuple(problems)


def named_files(config: Config) -> list[NamedFile]:
    """Every file the configuration names, in the order of its sections."""
    files = [
        NamedFile(f"diameter.dictionaries[{i}]", p, True, True) for i, p in enumerate(config.diameter.dictionaries)
    ]
    embedded = config.store.backend == "embedded"  # with redis, the node reads its lists from Redis
    files += [NamedFile(f"store.lists[{i}].path", src.path, embedded) for i, src in enumerate(config.store.lists)]
    files += [NamedFile(f"sync.snapshots[{i}].path", src.path, False) for i, src in enumerate(config.sync.snapshots)]
    if config.sync.mqtt is not None and config.sync.mqtt.cafile is not None:
        files.append(NamedFile("sync.mqtt.cafile", config.sync.mqtt.cafile, False))
    if config.events is not None and config.events.cafile is not None:
        files.append(NamedFile("events.cafile", config.events.cafile, True))
    sbi = config.sbi
    if sbi is not None:
        named: list[tuple[str, str | None, bool]] = [
            ("sbi.certfile", sbi.certfile, sbi.tls),
            ("sbi.keyfile", sbi.keyfile, sbi.tls),
            ("sbi.cafile", sbi.cafile, sbi.tls),
            ("sbi.oauth2.key_file", sbi.oauth2.key_file, sbi.oauth2.enabled),
            ("sbi.nrf.cafile", sbi.nrf.cafile, sbi.nrf.url is not None),
        ]
        files += [NamedFile(key, path, used) for key, path, used in named if path is not None]
    return files


def file_problem(path: str, *, directory_ok: bool = False) -> str | None:
    """Why ``path`` cannot be read as a file (or, with ``directory_ok``, a directory); None if it can."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "no such file or directory" if directory_ok else "no such file"
    except OSError as exc:
        return _strerror(exc)
    try:
        if stat.S_ISDIR(st.st_mode):
            if not directory_ok:
                return "is a directory, not a file"
            os.listdir(path)
        else:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # O_NONBLOCK: a FIFO must not hang the check
    except OSError as exc:
        return _strerror(exc)
    return None


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def missing_files(config: Config, *, node_only: bool = False) -> list[FileProblem]:
    """The named files that cannot be read; with ``node_only``, only those `s13eir serve` reads."""
    problems = []
    for f in named_files(config):
        if node_only and not f.read_by_node:
            continue
        problem = file_problem(f.path, directory_ok=f.directory_ok)
        if problem is not None:
            problems.append(FileProblem(f, problem))
    return problems


def check_files(config: Config, source: str, *, node_only: bool = False) -> None:
    """Raise :class:`FilesMissing` naming every file of :func:`missing_files`."""
    problems = missing_files(config, node_only=node_only)
    if problems:
        raise FilesMissing(source, problems)
