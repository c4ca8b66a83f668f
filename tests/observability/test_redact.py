"""No password of a configured URL in what s13eir logs or prints (observability.redact),
as a property and on the real commands against a password-protected redis-server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import yaml
from hypothesis import given
from hypothesis import strategies as st

from s13eir.observability.redact import REDACTED, redact_url
from tests.services import RedisServer

SECRET = "s3cr3t-Pa55"


@given(
    scheme=st.sampled_from(["redis", "rediss", "redis+sentinel", "mqtt", "mqtts"]),
    user=st.sampled_from(["", "sync", "s13eir-node"]),
    password=st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=20),
    hosts=st.sampled_from(["h1:26379,h2:26379", "127.0.0.1:6380", "broker.example.org"]),
    path=st.sampled_from(["", "/0", "/mymaster/1"]),
)
def test_the_password_is_replaced_and_the_rest_kept(scheme: str, user: str, password: str, hosts: str,
                                                    path: str) -> None:  # fmt: skip
    url = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}{path}"
    out = redact_url(url)
    parts = urlsplit(out)
    assert parts.password == REDACTED
    assert (parts.scheme, parts.username or "", parts.netloc.rpartition("@")[2], parts.path) == (
        scheme, user, hosts, path
    )  # fmt: skip


def test_urls_without_password_are_unchanged() -> None:
    for url in ("redis://127.0.0.1:6379/0", "mqtts://sync@broker:8883", "redis+sentinel://h1,h2/m"):
        assert redact_url(url) == url


def test_sync_and_lists_never_show_the_redis_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.command = lambda: [*RedisServer.command(server), "--requirepass", SECRET]  # type: ignore[method-assign]
    server.start()
    try:
        (tmp_path / "black.csv").write_text("imei,block_date,reasons\n35209900176148,20260101,stolen\n")
        good = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        cfg = {
            "node": {"origin_host": "eir.test", "origin_realm": "test"},
            "store": {"backend": "redis", "lists": [], "redis": {"url": good}},
            "sync": {
                "snapshots": [{"path": str(tmp_path / "black.csv"), "format": "dirbs-blacklist", "list": "black"}],
                "metrics": {"port": 0},
            },
        }
        path = tmp_path / "eir.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cli = [sys.executable, "-m", "s13eir.cli"]
        out: list[str] = []
        for args in (["lists", "status"], ["lists", "import", str(tmp_path / "black.csv"), "--list", "black"]):
            r = subprocess.run([*cli, *args, "--config", str(path)], capture_output=True, text=True, timeout=60)
            out += [r.stdout, r.stderr]
        assert "127.0.0.1" in out[0]  # the status names the server, without its password
        sync = subprocess.Popen([*cli, "sync", "--config", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        time.sleep(2.5)
        sync.terminate()
        out.append(sync.communicate(timeout=20)[0])
        # A wrong password and a server that is away: the error messages and retries.
        cfg["store"]["redis"]["url"] = f"redis://:{SECRET}x@127.0.0.1:{server.port}/0"  # type: ignore[index]
        path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run([*cli, "lists", "status", "--config", str(path)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        out += [r.stdout, r.stderr]
        assert r.returncode != 0
        text = "\n".join(out)
        assert "sync_starting" in text and REDACTED in text
        assert SECRET not in text, [line for line in text.splitlines() if SECRET in line]
    finally:
        server.stop()
