"""The client's address behind reverse proxies: X-Forwarded-For and X-Forwarded-Proto are
believed only when the connection comes from a configured proxy, and the client is the nearest
address in the chain that is not one of them. With no proxies configured, the peer address is
the client and the headers are ignored, so a caller cannot pick the address it is limited by."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `192.0.2.7` or `::1` → networks (ValueError on anything else)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class TrustedProxies:
    """Rewrites `scope["client"]` (and `scope["scheme"]`) from the forwarding headers of trusted
    proxies. Run the server with its own proxy handling off (`SERVER_OPTIONS`): uvicorn would
    otherwise trust any loopback peer before this sees the request."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[str] = ()) -> None:
        self.app = app
        self.networks = parse_networks(trusted)

    def trusts(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: list[bytes]) -> str:
        """The nearest untrusted hop of `peer` ← X-Forwarded-For (right to left); a malformed
        hop stops the walk there, at the last address a trusted proxy vouched for."""
        client = peer
        if not self.trusts(_address(peer)):
            return client
        hops = [hop for value in forwarded_for for hop in value.decode("latin-1").split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = str(address)
            if not self.trusts(address):
                break
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks and scope.get("client"):
            peer = scope["client"][0]
            if self.trusts(_address(peer)):
                headers = scope["headers"]
                forwarded = [v for k, v in headers if k == b"x-forwarded-for"]
                client = self.client_of(peer, forwarded)
                if client != peer:
                    scope = {**scope, "client": (client, 0)}
                proto = [v for k, v in headers if k == b"x-forwarded-proto"]
                if proto and proto[-1].decode("latin-1").strip().lower() in ("http", "https"):
                    scheme = proto[-1].decode("latin-1").strip().lower()
                    if scope["type"] == "websocket":
                        scheme = scheme.replace("http", "ws")
                    scope = {**scope, "scheme": scheme}
        await self.app(scope, receive, send)
