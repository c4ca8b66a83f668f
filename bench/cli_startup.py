"""Start-up time of the ``s13eir`` command: how long ``--version``, ``--help``,
``config check`` and one ``check`` take from exec to exit.

Each command is run ``--runs`` times in interleaved rounds, next to two baselines measured
in the same rounds: ``python -c pass`` (the interpreter alone) and ``python -c "import
s13eir"``. The machine is shared, so the table gives the median and the minimum of each
and their ratios to ``python -c pass``; the ratios are what compares across runs.
``check`` asks a node this script starts on free loopback ports (a copy of
config/eir.yaml with its ports changed and its list paths made absolute).

``--before SRC`` also runs every command with ``PYTHONPATH=SRC``: the source tree of
another commit, for instance the one before the commands imported lazily:

    git worktree add --detach /tmp/cli-before 24c6f82
    .venv/bin/python bench/cli_startup.py --runs 15 --before /tmp/cli-before/src

The node is always the current tree's; only the command under test changes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
S13EIR = str(Path(PY).parent / "s13eir")  # the console script, as an operator runs it
CONFIG = "config/eir.yaml"
IMEI = "35209900176148"  # BLACKLISTED in config/lists: check exits 0
TARGETS_S = {"s13eir --version": 0.2, "s13eir check": 0.4}  # the targets, medians on this machine
BASELINE = "python -c pass"


@dataclass(frozen=True)
class Case:
    label: str
    argv: list[str]
    per_tree: bool = True  # False: the same for every tree (the interpreter baseline)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_config(tmp: Path) -> tuple[Path, int]:
    """config/eir.yaml on free ports (Diameter, metrics, N5g-eir), list paths absolute."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / CONFIG).read_text())
    port = free_port()
    cfg["listen"] = [{"transport": "tcp", "address": "127.0.0.1", "port": port}]
    cfg["metrics"]["port"] = free_port()
    if cfg.get("sbi") is not None:
        cfg["sbi"]["port"] = free_port()
    for src in cfg["store"]["lists"]:
        src["path"] = str((ROOT / CONFIG).parent / src["path"])
    cfg["logging"]["level"] = "warning"
    path = tmp / "eir.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port


def start_node(config: Path) -> subprocess.Popen[bytes]:
    cfg = yaml.safe_load(config.read_text())
    url = f"http://127.0.0.1:{cfg['metrics']['port']}/readyz"
    proc = subprocess.Popen([PY, "-m", "s13eir.cli", "serve", "--config", str(config)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the node did not become ready in 30 s")


def cases(port: int) -> list[Case]:
    return [
        Case(BASELINE, [PY, "-c", "pass"], per_tree=False),
        Case('python -c "import s13eir"', [PY, "-c", "import s13eir"]),
        Case('python -c "import s13eir.cli"', [PY, "-c", "import s13eir.cli"]),
        Case("s13eir --version", [S13EIR, "--version"]),
        Case("s13eir --help", [S13EIR, "--help"]),
        Case(f"s13eir config check {CONFIG}", [S13EIR, "config", "check", CONFIG]),
        Case("s13eir check", [S13EIR, "check", "--peer", f"127.0.0.1:{port}", "--imei", IMEI]),
    ]


def run_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {out.returncode}: {out.stderr.decode(errors='replace')}")
    return elapsed


def measure(port: int, trees: dict[str, dict[str, str]], runs: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per run: {tree: {label: [...]}}, the rounds interleaved across trees and cases."""
    first = next(iter(trees))
    todo = [(tree, env, case) for case in cases(port) for tree, env in trees.items() if case.per_tree or tree == first]
    for _, env, case in todo:  # warm-up: byte-compile, page cache
        run_once(case.argv, env)
    times: dict[str, dict[str, list[float]]] = {tree: {} for tree in trees}
    for _ in range(runs):
        for tree, env, case in todo:
            times[tree].setdefault(case.label, []).append(run_once(case.argv, env))
    return times


def table(times: dict[str, dict[str, list[float]]]) -> str:
    now = times[next(iter(times))]
    base_med, base_min = statistics.median(now[BASELINE]), min(now[BASELINE])
    lines = [f"{'command':<40} {'tree':<7} {'median ms':>10} {'min ms':>8} {'x pass (med)':>13} {'x pass (min)':>13}"]
    for label in now:
        for tree, by_label in times.items():
            if label not in by_label:
                continue
            t = by_label[label]
            med, low = statistics.median(t), min(t)
            lines.append(
                f"{label:<40} {tree:<7} {med * 1e3:>10.1f} {low * 1e3:>8.1f} {med / base_med:>13.1f} "
                f"{low / base_min:>13.1f}"
            )
    return "\n".join(lines)


def targets(times: dict[str, dict[str, list[float]]]) -> list[str]:
    now = times[next(iter(times))]
    out = []
    for label, limit in TARGETS_S.items():
        med = statistics.median(now[label])
        verdict = "met" if med < limit else "NOT met"
        out.append(f"target {label} < {limit * 1e3:.0f} ms: median {med * 1e3:.1f} ms, {verdict}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    ap.add_argument("--before", metavar="SRC", help="also time the commands with PYTHONPATH=SRC (another tree)")
    ap.add_argument("--json", metavar="OUT", help="write every run's seconds as JSON to OUT")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    trees = {"now": env}
    if args.before:
        src = Path(args.before).resolve()
        if not (src / "s13eir" / "__init__.py").is_file():
            raise SystemExit(f"--before: {src} holds no s13eir package")
        trees["before"] = {**env, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(prefix="s13eir-cli-") as tmp:
        config, port = node_config(Path(tmp))
        node = start_node(config)
        try:
            times = measure(port, trees, args.runs)
        finally:
            node.terminate()
            node.wait(timeout=15)
    print(f"{args.runs} runs each, interleaved; ratios against {BASELINE!r} measured in the same rounds")
    print(table(times))
    for line in targets(times):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "seconds": times}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
