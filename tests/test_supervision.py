"""No background task dies unnoticed: the supervisor (s13eir.supervision), its use by a
node, and a scan of src/ that refuses a bare create_task/ensure_future."""

from __future__ import annotations

import ast
import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis as redis_sync
import structlog

from s13eir.config_loading import config_from_mapping
from s13eir.lists import redis_layout as L
from s13eir.node import Node
from s13eir.observability.metrics import SourceMetrics, render
from s13eir.supervision import Supervisor
from tests.lists.test_redis_node import redis_config, seed
from tests.redis_seed import append_change
from tests.services import RedisServer

SRC = Path(__file__).resolve().parent.parent / "src" / "s13eir"

# Tasks created outside the supervisor, each awaited (or gathered, or cancelled and
# awaited) by the function that creates it, so that its error reaches that function:
# (module, function) -> why it is not supervised.
SCOPED = {
    ("sync/process.py", "_until_stopped"): "the work, a stop waiter and a lock watcher, all awaited here",
    ("sync/writer.py", "import_snapshot"): "two scans gathered here",
    ("sync/imports.py", "load_generation"): "the file reader thread and the script calls, awaited here",
    ("sync/generation_scan.py", "_prefetched"): "the next chunk's HKEYS, awaited (or cancelled) here",
    ("sightings/publisher.py", "_drain"): "the connection watcher and a wake-up waiter, awaited here",
    ("sightings/publisher.py", "_publish_batch"): "one publish per event, gathered and settled here",
    ("sbi/server.py", "_answer"): "a request's pending verdict; its done callback answers the stream, errors too",
    ("node.py", "stop"): "DPA waits, awaited with a timeout here",
    ("loadgen/procs.py", "_run_here"): "the progress reporter of a load run, cancelled and awaited here",
    (
        "loadgen/procs.py",
        "_worker_main",
    ): "the progress ticker of a load run, cancelled and awaited here",
}
SPAWNERS = {"create_task", "ensure_future"}


def task_calls(root: Path = SRC) -> dict[tuple[str, str], int]:
    """(module, enclosing function) -> number of create_task/ensure_future calls."""
    out: dict[tuple[str, str], int] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "supervision.py":
            continue
        tree = ast.parse(path.read_text(), str(path))

        def visit(node: ast.AST, func: str) -> None:
            for child in ast.iter_child_nodes(node):
                name = func
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = child.name
                if isinstance(child, ast.Call):
                    f = child.func
                    called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                    if called in SPAWNERS or (called == "Task" and isinstance(f, ast.Attribute)):
                        out[(rel, func)] = out.get((rel, func), 0) + 1  # noqa: B023 - used at once
                visit(child, name)

        visit(tree, "<module>")
    return out


def test_no_bare_create_task_for_work_whose_failure_matters() -> None:
    found = task_calls()
    unexpected = sorted(set(found) - set(SCOPED))
    assert not unexpected, (
        "background tasks outside the supervisor (use Supervisor.start for long-lived work, "
        f"Supervisor.spawn for one-shot work, or await the task where it is made): {unexpected}"
    )
    stale = sorted(set(SCOPED) - set(found))
    assert not stale, f"SCOPED names call sites that are gone: {stale}"


def test_the_scan_sees_a_bare_create_task(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "import asyncio\nclass C:\n    async def f(self):\n        asyncio.get_running_loop().create_task(g())\n"
        "        asyncio.ensure_future(g())\n"
    )
    assert task_calls(tmp_path) == {("mod.py", "f"): 2}


async def test_a_crash_is_logged_once_counted_restarted_and_shown() -> None:
    sup = Supervisor(backoff_min_s=0.2, settle_s=0.3)
    runs = 0
    gate = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("boom")
        await gate.wait()

    with structlog.testing.capture_logs() as logs:
        task = sup.start("flaky", flaky)
        await asyncio.sleep(0.05)
        assert sup.down() == {"flaky": "ValueError: boom"}  # in its backoff
        assert sup.describe_down() == "task down: flaky (ValueError: boom), restarting"
        deadline = time.monotonic() + 5
        while runs < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert "flaky" in sup.down()  # restarted, not yet settled
        await asyncio.sleep(0.4)
        assert sup.down() == {}
        gate.set()
        await asyncio.wait_for(task, 5)
    failed = [e for e in logs if e["event"] == "task_failed"]
    assert len(failed) == 1 and failed[0]["task"] == "flaky" and isinstance(failed[0]["exc_info"], ValueError)
    assert sup.failures == {"flaky": 1} and sup.restarts == {"flaky": 1}
    text = render(SourceMetrics(sup.metrics)).decode()
    assert 's13eir_task_failures_total{task="flaky"} 1.0' in text
    assert 's13eir_task_down{task="flaky"} 0.0' in text


async def test_stop_on_ends_the_task_and_reaches_the_caller() -> None:
    class Fatal(Exception):
        pass

    async def run() -> None:
        raise Fatal()

    sup = Supervisor()
    with pytest.raises(Fatal):
        await sup.start("fatal", run, stop_on=(Fatal,))
    assert sup.failures == {"fatal": 0}


async def test_spawned_work_has_its_error_collected() -> None:
    sup = Supervisor()

    async def work() -> None:
        raise RuntimeError("lost")

    with structlog.testing.capture_logs() as logs:
        t = sup.spawn("one-shot", work())
        await asyncio.wait([t])
        await asyncio.sleep(0)
    assert sup.failures["one-shot"] == 1
    assert [e["task"] for e in logs if e["event"] == "task_failed"] == ["one-shot"]
    assert not sup._tasks  # no reference kept once done


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


async def test_a_node_shows_a_crashed_follower_and_restarts_it(redis_server: RedisServer) -> None:
    seed(redis_server)
    node = Node(config_from_mapping(redis_config(redis_server)))
    store = node.redis_lists
    assert store is not None
    node.supervisor.backoff_min_s = 0.5
    follow = store._follow
    crashes = 0

    async def crashing_follow() -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise KeyError("a bug outside the follower's own handlers")
        await follow()

    store._follow = crashing_follow  # type: ignore[method-assign]
    await node.start()
    try:
        http = next(p for t, _, p in node.bound if t == "http")
        status, body = await asyncio.to_thread(readyz, http)
        assert status == 503 and body.startswith("task down: change-follower (KeyError"), body
        deadline = time.monotonic() + 10
        while (ready := await asyncio.to_thread(readyz, http))[0] != 200:
            assert time.monotonic() < deadline, f"the follower was not restarted: {ready}"
            await asyncio.sleep(0.1)
        assert node.supervisor.failures["change-follower"] == 1
        # Restarted, it follows the stream again.
        r = redis_sync.Redis.from_url(redis_server.url)
        before = store.seq
        append_change(r, L.Change("add", "black", "35450712345675", reason="stolen", source="feed"))
        deadline = time.monotonic() + 5
        while store.seq == before:
            assert time.monotonic() < deadline, "the restarted follower does not follow"
            await asyncio.sleep(0.05)
        text = render(node.metrics).decode()
        assert 's13eir_task_failures_total{task="change-follower"} 1.0' in text
    finally:
        await node.stop()
