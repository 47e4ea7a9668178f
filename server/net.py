"""Small socket and HTTP helpers shared by the launcher and the front proxy."""

from __future__ import annotations

import contextlib
import socket
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different TCP ports on ``host`` that are free right now.

    Each socket stays bound until all are chosen: separate :func:`free_port` calls may return the same
    port twice, which breaks a server given it for two listeners.
    """
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def connect_host(host: str) -> str:
    """The address to connect to for a listener bound to ``host`` (wildcards mean loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((connect_host(host), port)) == 0


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether a GET of ``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=1
        ) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
