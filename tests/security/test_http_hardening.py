"""The gateway's HTTP defences over a real socket, served as `sagaway dev` serves it (uvicorn
with sagaway.dev.listener's options): security headers on every answer, 431 for too large or
too many header fields, and X-Forwarded-For believed only from configured proxies."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from sagaway.dev.listener import bind_listener, dev_server
from tests.gateway.conftest import MakeGateway
from tests.harness.waiting import eventually

Serve = Callable[..., Any]


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """`app` on a free loopback port, as `sagaway dev` runs its listener."""
    sock = bind_listener("127.0.0.1", 0)
    server = dev_server(app, log_level="WARNING", grace_s=1)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started, timeout_s=10, what="the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait([task], timeout=5)
        sock.close()


@pytest.fixture
def stack() -> str:
    return "embedded"


@pytest.fixture
async def serve(make_gateway: MakeGateway) -> AsyncIterator[Serve]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> str:
            running = await make_gateway(f"gw-{uuid.uuid4().hex[:6]}", **overrides)
            return await stack.enter_async_context(served(running.app))

        yield start


async def test_every_gateway_answer_carries_the_security_headers(serve: Serve) -> None:
    url = await serve()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answers = [
            await client.get("/healthz"),
            await client.get("/openapi.json"),
            await client.get("/nowhere"),
            await client.get(f"/api/v1/requests/{uuid.uuid4()}"),
            await client.post(
                "/api/v1/orders", content=b"{", headers={"Content-Type": "text/plain"}
            ),
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 404, 404, 415]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "server" not in answer.headers


async def raw_request(url: str, header_lines: list[bytes]) -> tuple[int, bytes]:
    """GET /healthz with these extra header lines, over a plain socket: the status and body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        writer.write(head + b"".join(header_lines) + b"\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_too_large_or_too_many_header_fields_are_answered_431(serve: Serve) -> None:
    url = await serve(gateway_max_header_bytes=16_384, gateway_max_headers=100)
    assert (await raw_request(url, [b"X-Small: 1\r\n"]))[0] == 200
    status, body = await raw_request(url, [b"X-Big: " + b"a" * 2_000_000 + b"\r\n"])
    assert status == 431 and b"16384" in body
    status, body = await raw_request(url, [b"X-H%d: v\r\n" % n for n in range(500)])
    assert status == 431 and b"header fields" in body
    # At the limits it still answers.
    assert (await raw_request(url, [b"X-H%d: v\r\n" % n for n in range(90)]))[0] == 200
    assert (await raw_request(url, [b"X-Mid: " + b"a" * 15_000 + b"\r\n"]))[0] == 200


async def statuses(url: str, forwarded: list[str]) -> list[int]:
    """GET a request id once per X-Forwarded-For value (auth off: limited by address)."""
    found = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for value in forwarded:
            answer = await client.get(
                f"/api/v1/requests/{uuid.uuid4()}", headers={"X-Forwarded-For": value}
            )
            found.append(answer.status_code)
    return found


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_pick_the_limited_address(
    serve: Serve,
) -> None:
    url = await serve(rate_limit_per_s=0.01, rate_limit_burst=2)
    rotating = [f"198.51.100.{n}" for n in range(1, 6)]
    assert await statuses(url, rotating) == [404, 404, 429, 429, 429]


async def test_a_trusted_proxy_names_the_client_as_the_nearest_untrusted_hop(
    serve: Serve,
) -> None:
    url = await serve(
        rate_limit_per_s=0.01, rate_limit_burst=2, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]
    )
    rotating = [f"198.51.100.{n}" for n in range(1, 6)]
    assert await statuses(url, rotating) == [404] * 5
    # A client cannot hide behind a spoofed first hop: the chain is read from the right.
    chain = [f"203.0.113.{n}, 192.0.2.7, 10.1.2.3" for n in range(1, 5)]
    assert await statuses(url, chain) == [404, 404, 429, 429]
