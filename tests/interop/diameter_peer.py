"""Helpers shared by the interop tests: a small blocking Diameter peer built on
python-diameter, skip checks for external tools, and process clean-up.

The peer is deliberately independent of s13eir's own client and framing code, so
that what it sends and how it reads answers is python-diameter's view only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    DeviceWatchdogAnswer,
    DisconnectPeerAnswer,
    MeIdentityCheckRequest,
)

APP_S13 = 16777252
VENDOR_3GPP = 10415
CMD_DWR, CMD_DPR = 280, 282


def require_tool(name: str) -> str:
    """The path of an executable, or skip the test saying which one is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (not on PATH)")
    return path


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal a process we started, wait for it, kill it if it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running(args: list[str], log_path: Path, sig: int = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process with stdout+stderr to ``log_path``; always stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc, sig)


def log_events(text: str, event: str) -> list[dict[str, object]]:
    """The JSON log lines of s13eir with ``"event": event``."""
    out = []
    for line in text.splitlines():
        if f'"event":"{event}"' in line.replace(" ", ""):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


class PeerError(Exception):
    pass


@dataclass
class DiameterConnection:
    """One Diameter connection, driven synchronously; answers DWR and DPR from the
    other side by itself and records every frame it received."""

    sock: socket.socket
    origin_host: str
    origin_realm: str
    timeout: float = 10.0
    received: list[bytes] = field(default_factory=list)
    dwr_answered: int = 0
    dpr_answered: int = 0
    _buf: bytes = b""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(int.from_bytes(os.urandom(3), "big")))

    def ident(self, msg: Message) -> Message:
        msg.header.hop_by_hop_identifier = next(self._ids) & 0xFFFFFFFF
        msg.header.end_to_end_identifier = next(self._ids) & 0xFFFFFFFF
        return msg

    def send(self, data: bytes | Message) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else data.as_bytes())

    def next_frame(self, deadline: float) -> bytes:
        while True:
            if len(self._buf) >= 4:
                length = int.from_bytes(self._buf[1:4], "big")
                if length < 20:
                    raise PeerError(f"bad Diameter length {length} in {self._buf[:20].hex()}")
                if len(self._buf) >= length:
                    frame, self._buf = self._buf[:length], self._buf[length:]
                    self.received.append(frame)
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerError("timed out waiting for a Diameter message")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise PeerError("timed out waiting for a Diameter message") from None
            if not data:
                raise PeerError("connection closed by the other side")
            self._buf += data

    def _answer_base(self, frame: bytes) -> bool:
        """Answer a DWR or DPR; True when the frame was one."""
        flags, code = frame[4], int.from_bytes(frame[5:8], "big")
        if not flags & 0x80 or code not in (CMD_DWR, CMD_DPR):
            return False
        req = Message.from_bytes(frame)
        ans: Message = DeviceWatchdogAnswer() if code == CMD_DWR else DisconnectPeerAnswer()
        ans.header.hop_by_hop_identifier = req.header.hop_by_hop_identifier
        ans.header.end_to_end_identifier = req.header.end_to_end_identifier
        ans.result_code = 2001
        ans.origin_host = self.origin_host.encode()
        ans.origin_realm = self.origin_realm.encode()
        self.send(ans)
        if code == CMD_DWR:
            self.dwr_answered += 1
        else:
            self.dpr_answered += 1
        return True

    def request(self, msg: Message | bytes, hop_by_hop: int | None = None) -> bytes:
        """Send a request, return the raw answer with the same Hop-by-Hop Identifier."""
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        hbh = int.from_bytes(raw[12:16], "big") if hop_by_hop is None else hop_by_hop
        self.send(raw)
        deadline = time.monotonic() + self.timeout
        while True:
            frame = self.next_frame(deadline)
            if self._answer_base(frame):
                continue
            if not frame[4] & 0x80 and int.from_bytes(frame[12:16], "big") == hbh:
                return frame

    def serve_base(self, until: Callable[[], bool], timeout: float) -> None:
        """Answer DWR/DPR from the other side until ``until()`` or the connection closes."""
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            try:
                frame = self.next_frame(min(deadline, time.monotonic() + 0.5))
            except PeerError as exc:
                if "closed" in str(exc):
                    return
                continue
            self._answer_base(frame)

    def answer_cer(self, frame: bytes) -> Message:
        """Accept a CER: CEA with 2001, advertising S13 the 3GPP way."""
        cer = Message.from_bytes(frame)
        cea = CapabilitiesExchangeAnswer()
        cea.header.hop_by_hop_identifier = cer.header.hop_by_hop_identifier
        cea.header.end_to_end_identifier = cer.header.end_to_end_identifier
        cea.result_code = 2001
        cea.origin_host = self.origin_host.encode()
        cea.origin_realm = self.origin_realm.encode()
        cea.host_ip_address = ["127.0.0.1"]
        cea.vendor_id = 0
        cea.product_name = "interop-mme"
        cea.supported_vendor_id = [VENDOR_3GPP]
        cea.vendor_specific_application_id = [
            VendorSpecificApplicationId(vendor_id=VENDOR_3GPP, auth_application_id=APP_S13)
        ]
        self.send(cea)
        return cer

    def ecr(
        self,
        imei: str,
        imsi: str | None = None,
        destination_realm: str = "s13eir.test",
        destination_host: str | None = None,
    ) -> MeIdentityCheckRequest:
        req = MeIdentityCheckRequest()
        req.header.application_id = APP_S13  # python-diameter leaves it 0
        self.ident(req)
        req.session_id = f"{self.origin_host};{int(time.time())};{next(self._ids)}"
        req.auth_session_state = 1
        req.origin_host = self.origin_host.encode()
        req.origin_realm = self.origin_realm.encode()
        req.destination_realm = destination_realm.encode()
        if destination_host:
            req.destination_host = destination_host.encode()
        req.terminal_information = TerminalInformation(imei=imei, software_version="01")
        if imsi:
            req.user_name = imsi
        return req


@dataclass(frozen=True)
class Eca:
    """What an ECA said, read with python-diameter."""

    e_bit: bool
    result_code: int | None
    experimental_result_code: int | None
    equipment_status: int | None
    failed_avp_codes: tuple[tuple[int, int], ...]
    route_record: tuple[str, ...]
    raw: bytes

    @classmethod
    def decode(cls, raw: bytes) -> Eca:
        msg = Message.from_bytes(raw)
        exp = getattr(msg, "experimental_result", None)
        failed = getattr(msg, "failed_avp", None) or []
        if not isinstance(failed, list):
            failed = [failed]
        codes = tuple((a.code, a.vendor_id or 0) for f in failed for a in f.additional_avps)
        return cls(
            e_bit=bool(raw[4] & 0x20),
            result_code=getattr(msg, "result_code", None),
            experimental_result_code=exp.experimental_result_code if exp is not None else None,
            equipment_status=getattr(msg, "equipment_status", None),
            failed_avp_codes=codes,
            route_record=tuple(
                r.decode() if isinstance(r, bytes) else r for r in getattr(msg, "route_record", []) or []
            ),
            raw=raw,
        )


def accept_one(listener: socket.socket, timeout: float) -> socket.socket:
    listener.settimeout(timeout)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise PeerError(f"nobody connected within {timeout} s") from None
    return conn
