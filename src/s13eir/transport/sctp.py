"""Diameter over SCTP (TS 29.272 §7.1.5 asks for it on S13) through Linux
one-to-one SCTP sockets, which asyncio drives like TCP streams.

Where the kernel has no SCTP support, creating the socket fails and the caller
reports it; TCP remains available.
"""

from __future__ import annotations

import socket

IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)


def sctp_available() -> bool:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError:
        return False
    s.close()
    return True


def listening_socket(address: str, port: int, backlog: int = 128, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
