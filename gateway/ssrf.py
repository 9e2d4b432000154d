"""Callback URLs may not reach into private networks: the host is resolved and every address it
resolves to is checked, at accept time and again at send time (the POST then goes to the checked
address, so DNS cannot be switched in between).

Rules (`callback_allowed_hosts`): the host must match an entry (`example.com`, `*.example.com`,
`*`). Private, loopback, link-local, multicast, reserved or unspecified addresses, and plain
`http://`, are allowed only for hosts listed by exact name or IP — never through a wildcard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.problems import CallbackRefused

MAX_URL_LENGTH = 2000
# Labels of 1 to 63 letters, digits, hyphens (and underscores, which DNS carries), no hyphen
# at either end.
HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A checked callback URL and the addresses its host resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    # The host is listed exactly in callback_allowed_hosts: its addresses may be non-public.
    listed: bool = False


# IPv6 ranges that carry an IPv4 address in their last 32 bits: IPv4-compatible (::/96),
# IPv4-translated (::ffff:0:0:0/96) and NAT64 (64:ff9b::/96, RFC 6052). 6to4 (2002::/16) and
# Teredo (2001::/32) carry theirs elsewhere; ipaddress extracts those. IPv4-mapped is separate.
EMBEDS_IPV4_LOW_BITS = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
)
# Local-use NAT64 (RFC 8215): translated by the operator's own gateway, never public.
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches or carries (mapped, compatible, translated,
    NAT64, 6to4, both ends of Teredo)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if any(address in network for network in EMBEDS_IPV4_LOW_BITS) and int(address) > 1:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _public_flags(address: IPAddress) -> bool:
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def is_public(address: IPAddress) -> bool:
    """Reachable on the public internet and nowhere else: an IPv6 address that embeds an IPv4
    address is public only if that one is too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in LOCAL_NAT64:
            return False
        embedded = embedded_ipv4(address)
        if address.ipv4_mapped is not None:
            return _public_flags(address.ipv4_mapped)
        if not all(_public_flags(inner) for inner in embedded):
            return False
    return _public_flags(address)


def _listed_exactly(host: str, allowed: Sequence[str]) -> bool:
    return any(entry.lower() == host for entry in allowed if "*" not in entry)


def _matches(host: str, allowed: Sequence[str]) -> bool:
    for entry in allowed:
        entry = entry.lower()
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
    return False


def parse_callback_url(url: str, allowed: Sequence[str]) -> tuple[str, str, int]:
    """Check the URL's form and host against the allow-list; returns (scheme, host, port)."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"the callback URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"the callback URL is not valid: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("https", "http") or not host:
        raise CallbackRefused("the callback URL must be an absolute https:// URL")
    check_host_name(host)
    if parts.username or parts.password:
        raise CallbackRefused("the callback URL may not carry credentials")
    if not _matches(host, allowed):
        raise CallbackRefused(f"callbacks to {host!r} are not allowed by configuration")
    if scheme == "http" and not _listed_exactly(host, allowed):
        raise CallbackRefused(f"callbacks to {host!r} must use https://")
    return scheme, host, port or (443 if scheme == "https" else 80)


def check_host_name(host: str) -> None:
    """Refuse a host that is neither an IP address nor a name DNS can carry: empty or over-long
    labels, a leading dot, characters IDNA refuses (the resolver would raise UnicodeError)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        raise CallbackRefused(
            f"the callback host {host!r} is not a valid host name: {exc}"
        ) from None
    if len(encoded) > 253 or not HOST_NAME.fullmatch(encoded.decode("ascii")):
        raise CallbackRefused(f"the callback host {host!r} is not a valid host name")


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise CallbackRefused(f"the callback host {host!r} does not resolve: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise CallbackRefused(f"the callback host {host!r} has no address")
    return tuple(found)


async def check_callback_url(url: str, allowed: Sequence[str]) -> CallbackTarget:
    """Parse, allow-list and resolve `url`; raises CallbackRefused (422) when it may not be used."""
    scheme, host, port = parse_callback_url(url, allowed)
    addresses = await resolve(host, port)
    listed = _listed_exactly(host, allowed)
    if not listed:
        blocked = [str(a) for a in addresses if not is_public(a)]
        if blocked:
            raise CallbackRefused(
                f"the callback host {host!r} resolves to a non-public address "
                f"({', '.join(blocked)}); list it in callback_allowed_hosts to allow it"
            )
    return CallbackTarget(url, scheme, host, port, tuple(str(a) for a in addresses), listed)
