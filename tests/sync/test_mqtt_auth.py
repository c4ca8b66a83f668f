"""The example broker (config/mosquitto/): TLS, passwords, and the shipped ACL, with which
only the master list's account can change lists. A real mosquitto on a loopback port,
certificates made here with openssl, and `s13eir sync` consuming over mqtts://."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from s13eir.backends.redis_client import AnyRedis, connect
from s13eir.config import RedisConfig
from s13eir.config_loading import config_from_mapping
from tests.services import MosquittoBroker, RedisServer, require
from tests.sync.test_mqtt_feed import EXIT_OK, add, imei, msg, read_lists, start, wait_for, write_black

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "config" / "mosquitto" / "s13eir.acl"
PREFIX = "feedtest"
TOPIC = "ceir/changes"  # as in the shipped ACL
USERS = {"ceir": "ceir-pw", "s13eir-sync": "sync-pw", "s13eir-node": "node-pw", "fraud-desk": "desk-pw"}


def make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=s13eir test CA")
    run("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=broker")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


class SecureBroker(MosquittoBroker):
    """The shipped mosquitto.conf's settings, on a free loopback port and private paths."""

    def command(self) -> list[str]:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        passwd = self.workdir / "passwd"
        passwd.write_text("")
        for user, pw in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
        passwd.chmod(0o600)
        conf = self.workdir / "mosquitto.conf"
        w = self.workdir
        conf.write_text(
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {ACL}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"certfile {w}/broker.crt\nkeyfile {w}/broker.key\ncafile {w}/ca.crt\ntls_version tlsv1.2\n"
            f"persistence true\npersistence_location {w}/\nmax_queued_messages 100000\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        return [exe, "-c", str(conf)]


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    require("mosquitto")
    for tool in ("mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    d = tmp_path / "broker"
    d.mkdir()
    make_certs(d)
    b = SecureBroker(d)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[AnyRedis]:
    r = connect(RedisConfig(url=redis_server.url, prefix=PREFIX), timeout_s=10)
    try:
        yield r
    finally:
        await r.aclose()


def tls(broker: SecureBroker) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(broker.workdir / "ca.crt"))


async def publish_as(broker: SecureBroker, user: str | None, payload: bytes, password: str | None = None) -> None:
    kw: dict[str, Any] = {"username": user, "password": password or USERS.get(user or "", "")} if user else {}
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{user}", timeout=5, tls_context=tls(broker),
                              **kw) as c:  # fmt: skip
        await c.publish(TOPIC, payload, qos=1)


async def test_only_the_master_lists_account_changes_lists(
    tmp_path: Path, redis_server: RedisServer, secure_broker: SecureBroker, redis: AnyRedis
) -> None:
    write_black(tmp_path, 1)
    url = f"mqtts://s13eir-sync:{USERS['s13eir-sync']}@127.0.0.1:{secure_broker.port}"
    config = config_from_mapping(
        {
            "node": {"origin_host": "eir.test", "origin_realm": "test"},
            "store": {"backend": "redis", "redis": {"url": redis_server.url, "prefix": PREFIX}},
            "sync": {
                "snapshots": [{"path": str(tmp_path / "black.csv"), "format": "dirbs-blacklist", "list": "black"}],
                "mqtt": {"url": url, "topic": TOPIC, "feed": "ceir", "cafile": str(secure_broker.workdir / "ca.crt")},
                "metrics": {"port": 0},
            },
        }
    )
    p, t = start(config)
    try:
        await wait_for(lambda: p.feed is not None and p.feed.subscribed.is_set(), what="sync subscribed over TLS")
        assert p.feed is not None
        await publish_as(secure_broker, "ceir", msg(1, add("black", 10)))
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 1, what="seq 1 applied")

        for user, password in ((None, None), ("ceir", "wrong"), ("nobody", "x")):
            with pytest.raises(aiomqtt.MqttError):
                await publish_as(secure_broker, user, msg(2, add("black", 66)), password)
        # Authenticated, but not the master list: the broker drops it (ACL), sync never sees it.
        await publish_as(secure_broker, "s13eir-node", msg(2, add("black", 66)))
        await publish_as(secure_broker, "fraud-desk", msg(2, add("black", 67)))
        await publish_as(secure_broker, "ceir", msg(2, add("black", 11)))
        await wait_for(lambda: p.feed is not None and p.feed.stats.last_seq == 2, what="seq 2 applied")
        assert (await read_lists(redis, PREFIX))["black"] == {imei(1), imei(10), imei(11)}
        assert (p.feed.stats.applied, p.feed.stats.duplicates, p.feed.stats.gaps) == (2, 0, 0)
    finally:
        p.stop.set()
        assert await asyncio.wait_for(t, 10) == EXIT_OK


def test_shipped_broker_config_is_authenticated() -> None:
    conf = (REPO / "config" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    settings = dict(line.split(None, 1) for line in conf if line.strip() and not line.startswith("#"))
    assert settings["allow_anonymous"] == "false"
    assert settings["password_file"] and settings["acl_file"].endswith("s13eir.acl")
    assert {"certfile", "keyfile"} <= set(settings)
    acl = ACL.read_text()
    writers = [block for block in acl.split("\n\n") if "topic write ceir/changes" in block]
    assert len(writers) == 1 and "user ceir\n" in writers[0]
