"""sagaway.http's middleware on a bare Starlette app: forwarded headers only from trusted
proxies, security headers that leave a route's own values alone, header limits."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sagaway.http import HeaderLimits, SecurityHeaders, TrustedProxies


async def whoami(request: Request) -> Response:
    client = request.client.host if request.client else None
    return JSONResponse({"client": client, "scheme": request.url.scheme})


async def own_policy(request: Request) -> Response:
    return Response("page", headers={"Content-Security-Policy": "script-src 'nonce-abc'"})


def app_with(middleware: type, **options: object) -> Starlette:
    app = Starlette(routes=[Route("/", whoami), Route("/own", own_policy)])
    app.add_middleware(middleware, **options)
    return app


async def seen(app: Starlette, peer: str, headers: dict[str, str]) -> dict[str, str]:
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        found: dict[str, str] = (await client.get("/", headers=headers)).json()
        return found


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", "6.6.6.6", "127.0.0.1"),  # nothing trusted: the peer
        ("198.51.100.1", "6.6.6.6", "198.51.100.1"),
    ],
)
async def test_with_no_trusted_proxies_forwarded_headers_are_ignored(
    peer: str, forwarded: str, client: str
) -> None:
    app = app_with(TrustedProxies, trusted=[])
    headers = {"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"}
    assert await seen(app, peer, headers) == {"client": client, "scheme": "http"}


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "1.2.3.4, 203.0.113.9, 10.0.0.7", "203.0.113.9"),  # nearest untrusted
        ("10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all trusted: the farthest
        ("10.0.0.5", "203.0.113.9:4711", "203.0.113.9"),
        ("10.0.0.5", "[2001:db8::1]:4711", "2001:db8::1"),
        ("10.0.0.5", "garbage", "10.0.0.5"),  # malformed: stays at the proxy
        ("10.0.0.5", "1.2.3.4, garbage, 203.0.113.9", "203.0.113.9"),
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),  # not a trusted peer
        ("::ffff:10.0.0.5", "203.0.113.9", "203.0.113.9"),
    ],
)
async def test_trusted_proxies_name_the_nearest_untrusted_hop(
    peer: str, forwarded: str, client: str
) -> None:
    app = app_with(TrustedProxies, trusted=["10.0.0.0/8"])
    answer = await seen(app, peer, {"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"})
    assert answer["client"] == client
    trusted_peer = peer.endswith("10.0.0.5")
    assert answer["scheme"] == ("https" if trusted_peer else "http")


async def test_security_headers_are_added_unless_the_route_set_its_own() -> None:
    app = app_with(SecurityHeaders, csp="default-src 'self'")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        plain = await c.get("/")
        own = await c.get("/own")
        missing = await c.get("/nowhere")
    assert plain.headers["content-security-policy"] == "default-src 'self'"
    assert missing.headers["content-security-policy"] == "default-src 'self'"
    assert own.headers.get_list("content-security-policy") == ["script-src 'nonce-abc'"]
    for answer in (plain, own, missing):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"


async def test_header_limits_answer_431_with_a_problem() -> None:
    app = app_with(HeaderLimits, max_bytes=2000, max_count=20)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/", headers={"X-A": "a" * 1500})).status_code == 200
        big = await c.get("/", headers={"X-A": "a" * 2500})
        many = await c.get("/", headers={f"X-{n}": "v" for n in range(30)})
    for answer in (big, many):
        assert answer.status_code == 431
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == 431
