"""Run an EIR node from the built image and ask it what an MME, an AMF and an
orchestrator would: an S13 ECR (``s13eir check``), an N5g-eir equipment-status request
over HTTP/2, and ``/healthz`` through the image's own HEALTHCHECK command.

    python deploy/image/smoke.py [IMAGE]          (default s13eir:latest)

The node runs with ``podman run`` (ports published on free loopback ports) where the
sandbox lets podman start a container; otherwise from the image's root filesystem
(``podman image mount``) with ``chroot --userspec=10001:10001``, the image's environment,
working directory and command, on free loopback ports. The output says which one ran.
It also checks what the image promises: numeric user 10001:10001, the exposed ports,
the OCI labels, every listener on 0.0.0.0, no wheel files or build tools left.
Exit 0 when every check passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("ENGINE") or shutil.which("podman") or shutil.which("docker") or "podman"
S13EIR = str(Path(sys.executable).parent / "s13eir")
BLACK_IMEI = "35209900176148"  # config/lists: blacklisted
BLACK_PEI = "352099001761481"  # the same IMEI with its check digit (a PEI has 15)
GREY_IMEI = "352906110000017"  # config/lists: greylisted
N5G = "/n5g-eir-eic/v1/equipment-status"
START_TIMEOUT_S = 60.0


class SmokeError(Exception):
    pass


def log(msg: str) -> None:
    print(f"smoke: {msg}", flush=True)


def engine(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SmokeError(f"{ENGINE} {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def inspect(image: str) -> dict[str, Any]:
    doc = json.loads(engine("image", "inspect", image).stdout)
    return dict(doc[0])


def healthcheck(info: dict[str, Any]) -> Any:
    # podman reports it beside Config, docker inside it.
    return info.get("Healthcheck") or info["Config"].get("Healthcheck")


def check_image_config(info: dict[str, Any], version: str) -> None:
    cfg = info["Config"]
    if cfg.get("User") != "10001:10001":
        raise SmokeError(f"USER is {cfg.get('User')!r}, not the numeric 10001:10001")
    exposed = set(cfg.get("ExposedPorts") or {})
    want = {"3868/tcp", "8080/tcp", "9100/tcp"}
    if os.environ.get("EXPOSE_SCTP", "3868/sctp"):
        want.add("3868/sctp")
    if not want <= exposed:
        raise SmokeError(f"EXPOSE lacks {sorted(want - exposed)}")
    labels = cfg.get("Labels") or {}
    for key, value in {
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.source": None,
    }.items():
        if not labels.get(key) or (value is not None and labels[key] != value):
            raise SmokeError(f"label {key} is {labels.get(key)!r}, want {value or 'set'}")
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    for key in ("S13EIR_LISTEN__0__ADDRESS", "S13EIR_SBI__ADDRESS", "S13EIR_METRICS__ADDRESS"):
        if env.get(key) != "0.0.0.0":
            raise SmokeError(f"{key} is {env.get(key)!r}: every listener must be on 0.0.0.0")
    health = (healthcheck(info) or {}).get("Test") or []
    if not any("/healthz" in part for part in health):
        raise SmokeError(f"HEALTHCHECK {health!r} does not probe /healthz")


def check_rootfs(rootfs: Path) -> None:
    wheels = [p for p in rootfs.rglob("*.whl") if not p.is_symlink()]
    if wheels:
        raise SmokeError(f"wheel files left in the image: {[str(p.relative_to(rootfs)) for p in wheels[:5]]}")
    for tool in ("uv", "gcc", "cc", "make", "pip", "pip3"):
        for bindir in ("usr/bin", "usr/local/bin", "opt/s13eir/bin"):
            if (rootfs / bindir / tool).exists():
                raise SmokeError(f"build tool left in the image: /{bindir}/{tool}")


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    path = Path(engine("image", "mount", image).stdout.strip())
    try:
        yield path
    finally:
        engine("image", "unmount", image, check=False)


def podman_can_run(image: str) -> tuple[bool, str]:
    proc = engine("run", "--rm", "--entrypoint", "/bin/true", image, check=False, timeout=60)
    return proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]


def wait_http(url: str, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> int:
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SmokeError(f"the node exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise SmokeError(f"{url} did not answer 200 in time (last: {last})")


def ask(diameter: int, sbi: int, metrics: int, version: str) -> None:
    for imei, verdict in ((BLACK_IMEI, "BLACKLISTED"), (GREY_IMEI, "GREYLISTED")):
        out = subprocess.run(
            [S13EIR, "check", "--peer", f"127.0.0.1:{diameter}", "--imei", imei],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0 or out.stdout.strip() != f"{imei}: {verdict}":
            raise SmokeError(f"s13eir check {imei}: {out.stdout.strip()} {out.stderr.strip()}")
        log(f"S13 ECR {imei}: {verdict}")
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        resp = client.get(f"http://127.0.0.1:{sbi}{N5G}", params={"pei": f"imei-{BLACK_PEI}"})
    if resp.status_code != 200 or resp.http_version != "HTTP/2" or resp.json().get("status") != "BLACKLISTED":
        raise SmokeError(f"N5g-eir: {resp.http_version} {resp.status_code} {resp.text}")
    log(f"N5g-eir {resp.http_version} GET {N5G}?pei=imei-{BLACK_PEI}: {resp.json()}")
    base = f"http://127.0.0.1:{metrics}"
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            if resp.status != 200:
                raise SmokeError(f"{path}: {resp.status}")
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    if not re.search(r'^s13eir_build_info\{[^}]*version="' + re.escape(version) + '"', text, re.M):
        raise SmokeError(f"/metrics has no s13eir_build_info with version {version}")
    log("/healthz 200, /readyz 200, s13eir_build_info on /metrics")


def healthcheck_argv(info: dict[str, Any], metrics: int) -> list[str]:
    test = list(healthcheck(info)["Test"])
    kind, argv = test[0], test[1:]
    if kind == "CMD-SHELL":
        argv = ["/bin/sh", "-c", argv[0]]
    # The node listens on a free port here, not on the image's 9100.
    return [a.replace("127.0.0.1:9100", f"127.0.0.1:{metrics}") for a in argv]


def run_chroot(image: str, info: dict[str, Any], version: str) -> None:
    cfg = info["Config"]
    diameter, sbi, metrics = free_port(), free_port(), free_port()
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    env.update(
        S13EIR_LISTEN__0__PORT=str(diameter),
        S13EIR_SBI__PORT=str(sbi),
        S13EIR_METRICS__PORT=str(metrics),
        S13EIR_LOGGING__LEVEL="warning",
    )
    argv = [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
    user = cfg["User"]
    with mounted(image) as rootfs:
        check_rootfs(rootfs)
        workdir = cfg.get("WorkingDir") or "/"
        # chroot(8) keeps the caller's directory; enter the image's WORKDIR first.
        cmd = ["chroot", f"--userspec={user}", str(rootfs), "/bin/sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]
        log(f"running with: chroot --userspec={user} <image rootfs> {' '.join(argv)}")
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{metrics}/readyz", time.monotonic() + START_TIMEOUT_S, proc)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
            # Popen's pid is chroot's, which exec()s the node: the same process.
            if not uid or uid.group(1) != "10001":
                raise SmokeError(f"the node runs as uid {uid.group(1) if uid else '?'}, not 10001")
            ask(diameter, sbi, metrics, version)
            hc = subprocess.run(
                ["chroot", f"--userspec={user}", str(rootfs), *healthcheck_argv(info, metrics)],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            )
            if hc.returncode != 0:
                raise SmokeError(f"the image's HEALTHCHECK failed: {hc.stderr.strip()}")
            log("the image's HEALTHCHECK command: healthy")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            if rc != 0:
                raise SmokeError(f"the node exited with {rc} after SIGTERM")
            log("SIGTERM: the node stopped cleanly (exit 0)")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_podman(image: str, info: dict[str, Any], version: str) -> None:
    diameter, sbi, metrics = free_port(), free_port(), free_port()
    name = f"s13eir-smoke-{os.getpid()}"
    engine(
        "run",
        "-d",
        "--name",
        name,
        "-e",
        "S13EIR_LOGGING__LEVEL=warning",
        "-p",
        f"127.0.0.1:{diameter}:3868",
        "-p",
        f"127.0.0.1:{sbi}:8080",
        "-p",
        f"127.0.0.1:{metrics}:9100",
        image,
    )
    log(f"running with: {ENGINE} run {image} (ports published on 127.0.0.1)")
    try:
        wait_http(f"http://127.0.0.1:{metrics}/readyz", time.monotonic() + START_TIMEOUT_S)
        user = engine("exec", name, "id", "-u").stdout.strip()
        if user != "10001":
            raise SmokeError(f"the node runs as uid {user}, not 10001")
        ask(diameter, sbi, metrics, version)
        with mounted(image) as rootfs:
            check_rootfs(rootfs)
        engine("healthcheck", "run", name)
        log("podman healthcheck run: healthy")
        engine("stop", "-t", "20", name)
        rc = engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        if rc != "0":
            raise SmokeError(f"the node exited with {rc} after SIGTERM")
        log("SIGTERM: the node stopped cleanly (exit 0)")
    finally:
        engine("rm", "-f", name, check=False)


def main() -> int:
    image = sys.argv[1] if len(sys.argv) > 1 else "s13eir:latest"
    version = subprocess.run([S13EIR, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    try:
        info = inspect(image)
        check_image_config(info, version)
        log(
            f"{image}: {info['Size'] / 1e6:.0f} MB, user {info['Config']['User']}, "
            f"ports {sorted(info['Config']['ExposedPorts'])}"
        )
        ok, why = podman_can_run(image)
        if ok:
            run_podman(image, info, version)
        else:
            log(f"{ENGINE} run is not possible here ({why}); running from the root filesystem")
            run_chroot(image, info, version)
    except (SmokeError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        log(f"FAILED: {exc}")
        return 1
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
