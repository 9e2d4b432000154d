"""Taking a role's listening ports before it starts anything else, so that a port already in
use stops the role at once with an error naming the port and the setting that moves it,
instead of a role that runs half-started (docs/deployment.md)."""

from __future__ import annotations

import errno
import socket


class ListenerUnavailable(RuntimeError):
    """A port the role must listen on cannot be taken (in use, or not allowed)."""


def listener_unavailable(
    host: str, port: int, what: str, setting: str, error: OSError
) -> ListenerUnavailable:
    """The error for `what` failing to listen on `host`:`port`, naming `setting` to change."""
    if error.errno == errno.EADDRINUSE:
        reason = "the port is already in use (another process, or another instance on this host)"
    else:
        reason = error.strerror or str(error)
    return ListenerUnavailable(
        f"cannot listen on {host}:{port} for {what}: {reason}; set {setting} to a free port"
    )


def bind_listener(host: str, port: int, what: str, setting: str) -> socket.socket:
    """A TCP socket bound to `host`:`port` for `what` (e.g. "the gateway's /metrics"), to hand
    to the server that listens on it once the role is ready (asyncio's `create_server(sock=)`
    calls listen), so no client connects to a role still waiting for its database. Port 0 takes
    a free one (read it back with `listener_port`). Raises ListenerUnavailable naming the
    address and `setting` (the variable or option to change) when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a port left in TIME_WAIT by a restart is free, one in use is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listener_unavailable(host, port, what, setting, exc) from None
    return sock


def listener_port(sock: socket.socket) -> int:
    """The port a listening socket took (the one picked when it was asked for port 0)."""
    return int(sock.getsockname()[1])
