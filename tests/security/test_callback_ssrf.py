"""SSRF: a Callback-Url may not reach private, loopback, link-local or otherwise non-public
addresses — whatever the spelling, through a name that resolves there (patched resolver: there is
no DNS here), through DNS that changes between accept and send, or through a redirect. Refused
with 422 when decidable at accept time, and never delivered at send time: a raw TCP listener on
loopback proves not even a connection is made. Only hosts listed exactly get through.

All real traffic stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx
import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from gateway.callback_network import (
    ConnectionRefused,
    VettedBackend,
    callback_transport,
    vetted,
)
from gateway.models import callbacks
from gateway.ssrf import CallbackTarget
from sagaway.messaging.envelope import Message
from tests.gateway.conftest import MakeGateway, RunningGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.gateway.receiver import CallbackReceiver, start_receiver, stop_receiver
from tests.harness.waiting import eventually

PUBLIC = "1.1.1.1"  # only ever returned by the patched resolver; never connected to


class FakeDns:
    """Names → address lists, consulted before the real resolver (which has no DNS here).
    A list of lists is served in turn, the last one repeating (DNS rebinding)."""

    def __init__(self) -> None:
        self.names: dict[str, list[list[str]]] = {}
        self.asked: list[str] = []

    def set(self, name: str, *answers: list[str]) -> None:
        self.names[name] = list(answers)

    def getaddrinfo(self, real: Any) -> Any:
        def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if name in self.names:
                self.asked.append(name)
                answers = self.names[name]
                addresses = answers.pop(0) if len(answers) > 1 else answers[0]
                return [
                    (
                        socket.AF_INET6 if ":" in a else socket.AF_INET,
                        socket.SOCK_STREAM,
                        6,
                        "",
                        (a, int(port or 0), 0, 0) if ":" in a else (a, int(port or 0)),
                    )
                    for a in addresses
                ]
            return real(host, port, *args, **kwargs)

        return fake


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    fake = FakeDns()
    # asyncio's loop.getaddrinfo (what gateway.ssrf.resolve uses) and httpx both call
    # socket.getaddrinfo at call time.
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo(socket.getaddrinfo))
    yield fake


class Sink:
    """A raw TCP listener on loopback that records every connection (a request that must never
    arrive would at least open one)."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aenter__(self) -> Sink:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with Sink() as sink:
        yield sink


class Redirector(CallbackReceiver):
    """A receiver that answers every POST with a redirect to `target`."""

    target: str = ""

    async def handle(self, request: Request) -> Response:
        await super().handle(request)
        return Response(status_code=302, headers={"Location": self.target})


async def delivery_rows(gw: RunningGateway) -> list[Any]:
    async with gw.engine.connect() as conn:
        return list((await conn.execute(sa.select(callbacks).order_by(callbacks.c.id))).all())


async def wait_for_tries(gw: RunningGateway, count: int, tries: int = 1) -> list[Any]:
    """The delivery rows once there are `count` of them, each tried at least `tries` times and
    its outcome recorded."""

    rows: list[Any] = []

    async def tried() -> list[Any] | None:
        rows[:] = await delivery_rows(gw)
        done = len(rows) >= count and all(
            r.attempts >= tries and (r.last_error or r.status != "pending") for r in rows
        )
        return list(rows) if done else None

    return await eventually(
        tried, timeout_s=10, what=lambda: f"callback deliveries to be tried: {rows}"
    )


REFUSED_AT_ACCEPT = [
    "https://127.0.0.2/hook",
    "https://[::1]/hook",
    "https://10.0.0.1/hook",
    "https://172.16.0.1/hook",
    "https://172.31.255.254/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # shared address space (CGNAT)
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
    "https://0.0.0.0/hook",
    "https://[::]/hook",
    "https://224.0.0.1/hook",
    "https://2130706433/hook",  # 127.0.0.1, decimal
    "https://0x7f000001/hook",  # hex
    "https://017700000001/hook",  # octal
    "https://127.1/hook",  # short form
    "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "https://[::ffff:7f00:1]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
    "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
    "https://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
    "https://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
    "https://[64:ff9b:1::808:808]/hook",  # local-use NAT64: never public
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo, client 127.0.0.1
    "https://[::127.0.0.1]/hook",  # IPv4-compatible
    "https://[::ffff:0:7f00:1]/hook",  # IPv4-translated
    "https://localhost/hook",
    "https://sixtofour.example.com/hook",  # patched: resolves to 6to4 of 127.0.0.1
    "https://loopback.example.com/hook",  # patched: resolves to 127.0.0.1
    "https://mixed.example.com/hook",  # patched: one public and one private address
    "https://metadata.example.com/hook",  # patched: the cloud metadata address
]


async def test_non_public_callback_targets_are_refused_at_accept_time_in_every_spelling(
    make_gateway: MakeGateway, double: OrchestratorDouble, dns: FakeDns
) -> None:
    # 127.0.0.1 is allowed by exact listing: no other spelling of it may ride on that.
    running = await make_gateway("gw-ssrf", callback_allowed_hosts=["*", "127.0.0.1"])
    dns.set("loopback.example.com", ["127.0.0.1"])
    dns.set("sixtofour.example.com", ["2002:7f00:1::1"])
    dns.set("mixed.example.com", [PUBLIC, "10.9.8.7"])
    dns.set("metadata.example.com", ["169.254.169.254"])
    for url in REFUSED_AT_ACCEPT:
        response = await running.client.post(
            "/api/v1/orders", json=order(), headers={"Callback-Url": url}
        )
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("callback-refused"), url
        assert "non-public address" in problem["detail"], (url, problem["detail"])
    assert {"loopback.example.com", "mixed.example.com", "metadata.example.com"} <= set(dns.asked)
    # A public-resolving name passes the check (the positive control of the patched resolver).
    dns.set("public.example.com", [PUBLIC])
    response = await running.client.post(
        "/api/v1/orders",
        json=order(),
        headers={"Callback-Url": "https://public.example.com/hook", "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    await asyncio.sleep(0.3)
    assert len(double.starts) == 1, "only the allowed callback started a saga"
    # Its delivery would go to 1.1.1.1: drop it before the sender tries.
    async with running.engine.begin() as conn:
        await conn.execute(sa.delete(callbacks))


async def test_a_name_that_resolves_to_loopback_at_send_time_is_never_connected(
    make_gateway: MakeGateway, double: OrchestratorDouble, dns: FakeDns, sink: Sink
) -> None:
    """DNS rebinding: public when the request is accepted, loopback when the callback is sent."""
    running = await make_gateway(
        "gw-rebind", callback_allowed_hosts=["*.example.com"], callback_backoff_s=0.1
    )
    dns.set("rebind.example.com", [PUBLIC], ["127.0.0.1"])
    response = await running.client.post(
        "/api/v1/orders",
        json=order(),
        headers={"Callback-Url": f"https://rebind.example.com:{sink.port}/hook"},
    )
    assert response.status_code == 202, response.text
    rows = await wait_for_tries(running, 1, tries=2)
    assert rows[0].status in ("pending", "failed")
    assert rows[0].last_error.startswith("refused:") and "non-public" in rows[0].last_error
    assert sink.connections == 0


async def test_a_kafka_callback_url_to_loopback_is_never_connected(
    make_gateway: MakeGateway, dns: FakeDns, sink: Sink
) -> None:
    """Final replies arriving on gateway.callbacks are checked only for form on intake; the
    address check happens at send time."""
    running = await make_gateway("gw-intake", callback_allowed_hosts=["*.example.com"])
    dns.set("internal.example.com", ["127.0.0.1"])
    urls = [
        f"https://internal.example.com:{sink.port}/hook",
        f"https://localhost:{sink.port}/hook",  # not allowed at all
        f"http://internal.example.com:{sink.port}/hook",  # http through a wildcard
        f"https://a..example.com:{sink.port}/hook",  # no host name: refused on intake
    ]
    records = []
    for n, url in enumerate(urls):
        saga_id = f"5d0c2a4e-0000-4000-8000-00000000000{n}"
        reply = Message(
            message_type="reply",
            payload={"saga_id": saga_id, "status": "completed", "result": {}, "failure": None},
            outcome="success",
            causation_id=f"5d0c2a4e-0000-4000-8000-0000000000a{n}",
            correlation_id=saga_id,
            saga_id=saga_id,
            saga_type="place-order",
            extra_headers=(("callback-url", url),),
        )
        records.append(reply.to_record(running.gateway.callback_topic))
    await running.transport.produce(records)
    rows = await wait_for_tries(running, 1)
    await asyncio.sleep(0.5)
    rows = await delivery_rows(running)
    # Those refused on intake never become deliveries; the first is refused when sent.
    assert [r.url for r in rows] == [urls[0]]
    assert rows[0].last_error.startswith("refused:") and "non-public" in rows[0].last_error
    assert sink.connections == 0


async def test_redirects_to_loopback_are_not_followed_and_only_listed_hosts_are_reached(
    make_gateway: MakeGateway, double: OrchestratorDouble, dns: FakeDns, sink: Sink
) -> None:
    redirector = Redirector()
    redirector.target = f"http://127.0.0.1:{sink.port}/internal"
    receiver = CallbackReceiver()
    servers = [await start_receiver(redirector), await start_receiver(receiver)]
    try:
        # Listed exactly: a name (resolving to loopback through the patched resolver) and an IP.
        running = await make_gateway(
            "gw-redirect",
            callback_allowed_hosts=["hooks.partner.example", "127.0.0.1"],
            callback_backoff_s=0.1,
        )
        dns.set("hooks.partner.example", ["127.0.0.1"])
        redirected = f"http://hooks.partner.example:{redirector.port}/hook"
        direct = receiver.url("/ok")
        for url in (redirected, direct):
            response = await running.client.post(
                "/api/v1/orders", json=order(), headers={"Callback-Url": url}
            )
            assert response.status_code == 202, response.text
        await receiver.wait_for(1)
        await redirector.wait_for(2)
        assert receiver.received[0].path == "/ok"
        assert redirector.received[0].headers["host"] == f"hooks.partner.example:{redirector.port}"
        rows = {r.url: r for r in await delivery_rows(running)}
        assert rows[redirected].last_status_code == 302
        assert rows[redirected].status == "pending" and rows[direct].status == "delivered"
        assert sink.connections == 0
    finally:
        for server, task in servers:
            await stop_receiver(server, task)


INVALID_HOSTS = [
    "https://a..b.com/hook",
    "https://" + "a" * 64 + ".example.com/hook",
    "https://.example.com/hook",
    "https://-a.example.com/hook",
    "https://a_b..example.com/hook",
]


async def test_a_callback_host_no_resolver_accepts_is_422_not_500(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    running = await make_gateway("gw-idna", callback_allowed_hosts=["*"])
    raw_hosts: list[bytes] = [url.encode() for url in INVALID_HOSTS]
    raw_hosts += [b"https://\xc3\xa9\x80.example.com/hook", b"https://ex\xe4mple\x80.com/"]
    for url in raw_hosts:
        response = await running.client.post(
            "/api/v1/orders", json=order(), headers={b"Callback-Url": url}
        )
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("callback-refused"), url
    assert not double.starts


class Elsewhere(httpcore.AsyncNetworkBackend):
    """A network that takes a connection to one address somewhere else (a NAT, an interception
    proxy): what the peer check after connecting is for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return await self.real.connect_tcp("127.0.0.1", self.port, *args, **kwargs)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


async def test_the_callback_client_connects_only_to_the_address_vetted_for_the_delivery(
    sink: Sink,
) -> None:
    url = f"http://127.0.0.1:{sink.port}/hook"
    loopback = CallbackTarget(url, "http", "127.0.0.1", sink.port, ("127.0.0.1",))
    async with httpx.AsyncClient(transport=callback_transport(), trust_env=False) as client:
        with pytest.raises(httpx.ConnectError, match="not a vetted address"):
            await client.post(url)  # no delivery vetted anything
        with vetted(loopback, private_allowed=False), pytest.raises(httpx.ConnectError):
            await client.post(url)  # vetted, but not public and not listed
        other = CallbackTarget(url, "http", "127.0.0.2", sink.port, ("127.0.0.2",), True)
        with vetted(other, private_allowed=True), pytest.raises(httpx.ConnectError):
            await client.post(url)  # vetted for another address
        assert sink.connections == 0
        with vetted(loopback, private_allowed=True), pytest.raises(httpx.RemoteProtocolError):
            await client.post(url)  # listed exactly: connected (the sink hangs up at once)
        assert sink.connections == 1
    # The peer is checked after connecting: a connection that lands elsewhere is closed.
    backend = VettedBackend(Elsewhere(sink.port))
    public = CallbackTarget("https://example.com/", "https", "example.com", 443, (PUBLIC,))
    with vetted(public, private_allowed=False), pytest.raises(ConnectionRefused, match="not the"):
        await backend.connect_tcp(PUBLIC, 443)
