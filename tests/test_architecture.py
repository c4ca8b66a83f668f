"""The layers hold: the pure core (codec, peer state machine, S13 handler, decision, list
parsing, the controllers) brings in no I/O, reads no clock, and no module imports from a
layer above its own (the import-linter contracts in pyproject.toml).

Both checks are also run against a module written to break them, so that a check that
had stopped seeing anything would fail here rather than pass."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "s13eir"

# What a pure module must not bring in, even through a library (python-diameter, for
# one, imports socket): the event loop, sockets, TLS, the clients of Redis, MQTT and
# HTTP/2, the logging and metrics frameworks.
FORBIDDEN = ("asyncio", "socket", "selectors", "ssl", "redis", "aiomqtt", "h2", "httpx", "structlog", "uvloop",
             "prometheus_client")  # fmt: skip
CLOCKS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "time_ns"),
          ("time", "monotonic_ns"), ("time", "perf_counter_ns"), ("datetime", "now"), ("datetime", "utcnow"),
          ("date", "today")}  # fmt: skip


def _pyproject() -> dict:  # type: ignore[type-arg]
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pure_modules() -> list[str]:
    """The pure modules, as the import-linter contract names them (one list, not two):
    a package stands for every module in it."""
    contract = next(c for c in _pyproject()["tool"]["importlinter"]["contracts"] if c["type"] == "forbidden")
    assert list(contract["forbidden_modules"]) == list(FORBIDDEN)
    out: list[str] = []
    for name in contract["source_modules"]:
        path = SRC.joinpath(*name.split("."))
        if path.is_dir():
            out += [_module(p) for p in sorted(path.rglob("*.py"))]
        else:
            out.append(name)
    return out


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _brought_in(module: str, path: Path = SRC) -> list[str]:
    """What importing ``module`` alone, in a fresh interpreter, adds of FORBIDDEN."""
    code = f"import sys; import {module}; print(' '.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def _source(module: str) -> str:
    path = SRC.joinpath(*module.split("."))
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()


def _clock_calls(source: str) -> list[str]:
    """``time.monotonic()``, ``datetime.now()`` and the like, as written in a module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if (name, node.func.attr) in CLOCKS:
                found.append(f"line {node.lineno}: {name}.{node.func.attr}()")
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            found += [
                f"line {node.lineno}: from time import {a.name}" for a in node.names if ("time", a.name) in CLOCKS
            ]
    return found


def test_the_pure_core_brings_in_no_io() -> None:
    modules = _pure_modules()
    assert len(modules) >= 40 and "s13eir.diameter.peer" in modules and "s13eir.s13" in modules
    with ThreadPoolExecutor(4) as pool:
        leaks = {m: found for m, found in zip(modules, pool.map(_brought_in, modules), strict=True) if found}
    assert not leaks, f"pure modules that bring in I/O: {leaks}"


def test_the_pure_core_reads_no_clock() -> None:
    """Time comes in as an argument (h11, aioquic and OTP diameter do the same): a test
    drives timers in virtual time, and a replay gives the same bytes."""
    found = {m: c for m in _pure_modules() if (c := _clock_calls(_source(m)))}
    assert not found, f"pure modules that read a clock: {found}"


def test_the_import_contracts_hold() -> None:
    r = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports): Tarjan's strongly
    connected components of more than one module, or one importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_package_or_the_benchmarks() -> None:
    """Type-only imports (under TYPE_CHECKING) are left out: they do not run."""
    import grimp

    g = grimp.build_graph("s13eir", exclude_type_checking_imports=True)
    package = {m: {i for i in g.find_modules_directly_imported_by(m) if i.startswith("s13eir")} for m in g.modules}
    assert not _cycles(package)
    bench = {p.stem: _bench_imports(p) for p in sorted((ROOT / "bench").glob("*.py"))}
    assert not _cycles({k: v & set(bench) for k, v in bench.items()})
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _bench_imports(path: Path) -> set[str]:
    """The top-level module names a benchmark script imports (they import each other by name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


# -- the checks see a violation -----------------------------------------------------------


def test_the_checks_catch_a_pure_module_that_imports_io(tmp_path: Path) -> None:
    """A copy of the package with one pure module changed to import asyncio (directly,
    and through a helper of a higher layer) and to read the clock: all three checks fail."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "s13eir", ignore=shutil.ignore_patterns("__pycache__"))
    header = copy / "s13eir" / "diameter" / "header.py"
    header.write_text(
        header.read_text()
        + textwrap.dedent("""
        import time

        from s13eir.observability import loop_lag  # a higher layer, and asyncio through it


        def stamped() -> float:
            return time.monotonic()
    """)
    )
    assert "asyncio" in _brought_in("s13eir.diameter.header", copy)
    assert "asyncio" in _brought_in("s13eir.diameter.peer", copy)  # through its import of header
    assert _clock_calls(header.read_text()) == [f"line {len(header.read_text().splitlines())}: time.monotonic()"]
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    r = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--config", str(config)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode != 0, r.stdout
    assert "Layers: entry points, composition, adapters, applications, the pure core BROKEN" in r.stdout
    assert "The pure core performs no I/O BROKEN" in r.stdout
    assert "s13eir.diameter.header -> s13eir.observability.loop_lag" in r.stdout


@pytest.mark.parametrize("layer", ["diameter", "decision"])
def test_every_module_of_the_core_packages_is_in_the_pure_list(layer: str) -> None:
    """The list is by package for the core: a new module there is checked without being named."""
    modules = _pure_modules()
    assert all(_module(p) in modules for p in (PACKAGE / layer).rglob("*.py"))
