"""The callback sender's connections: made only to an address the SSRF check vetted for the
delivery in hand, and checked again once connected (the peer the kernel actually reached), so
no request — whatever URL reaches the HTTP client — opens a connection into a private network.

The sender names the vetted addresses with `vetted(...)` around each POST; the network backend
of its HTTP client refuses every other connection before it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from gateway.ssrf import CallbackTarget, is_public


@dataclass(frozen=True, slots=True)
class Vetted:
    """Addresses one delivery may connect to; non-public ones only when its host is listed
    exactly in callback_allowed_hosts."""

    addresses: frozenset[str]
    private_allowed: bool


_VETTED: contextvars.ContextVar[Vetted | None] = contextvars.ContextVar(
    "gateway_callback_vetted", default=None
)


class ConnectionRefused(httpcore.ConnectError):
    """A connection the SSRF rules forbid (httpx reports it as httpx.ConnectError)."""


@contextlib.contextmanager
def vetted(target: CallbackTarget, *, private_allowed: bool) -> Iterator[None]:
    """Within the block, connections may go to `target`'s checked addresses only."""
    token = _VETTED.set(Vetted(frozenset(target.addresses), private_allowed))
    try:
        yield
    finally:
        _VETTED.reset(token)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class VettedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to an IP literal vetted for the current delivery, and closes the
    connection unless its peer is that address (and public, unless allowed)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        allowed = _VETTED.get()
        target = _ip(host)
        if allowed is None or target is None or str(target) not in allowed.addresses:
            raise ConnectionRefused(f"refused to connect to {host!r}: not a vetted address")
        if not allowed.private_allowed and not is_public(target):
            raise ConnectionRefused(f"refused to connect to non-public {target}")
        stream = await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        peer_info = stream.get_extra_info("server_addr")
        peer = _ip(str(peer_info[0])) if peer_info else None
        if peer != target or (not allowed.private_allowed and not is_public(peer)):
            await stream.aclose()
            raise ConnectionRefused(f"connected to {peer}, not the vetted {target}: closed")
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ConnectionRefused("callbacks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def callback_transport() -> httpx.AsyncHTTPTransport:
    """httpx's transport with its connection pool on a VettedBackend (no proxies, no env)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx takes no network backend; its pool is rebuilt here with the same defaults plus one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=VettedBackend(),
    )
    return transport
