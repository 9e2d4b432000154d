"""Callbacks: the final result is POSTed to the Callback-Url, signed, retried with backoff,
never redirected, and kept in the database until delivered (a restart does not lose it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from gateway.models import callbacks
from sagaway.observability import tracing
from tests.gateway.conftest import CALLBACK_SECRET, MakeGateway, RunningGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.gateway.receiver import CallbackReceiver, start_receiver, stop_receiver
from tests.harness.waiting import eventually


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    server, task = await start_receiver(receiver)
    yield receiver
    await stop_receiver(server, task)


async def _delivery_rows(gw: RunningGateway) -> list[sa.Row]:  # type: ignore[type-arg]
    async with gw.engine.connect() as conn:
        return list((await conn.execute(sa.select(callbacks))).all())


async def delivery_rows_once(
    gw: RunningGateway, done: Callable[[list[Any]], bool], timeout_s: float
) -> list[Any]:
    """The delivery rows, once there are some and `done` holds for them."""

    async def rows() -> list[Any] | None:
        found = await _delivery_rows(gw)
        return found if found and done(found) else None

    return await eventually(rows, timeout_s=timeout_s, what="the callback deliveries")


async def test_callback_is_signed_delivered_and_retried_after_the_receiver_fails(
    gw: RunningGateway, double: OrchestratorDouble, receiver: CallbackReceiver
) -> None:
    receiver.statuses = [500]
    response = await gw.client.post(
        "/api/v1/orders", json=order(), headers={"Callback-Url": receiver.url()}
    )
    assert response.status_code == 202
    request_id = response.json()["id"]
    assert response.headers["Location"] == f"/api/v1/requests/{request_id}"
    await receiver.wait_for(2)
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers[DELIVERY_HEADER.lower()] == second.headers[DELIVERY_HEADER.lower()]
    for delivery in (first, second):
        assert verify_signature(
            CALLBACK_SECRET, delivery.headers[SIGNATURE_HEADER.lower()], delivery.body
        )
        assert not verify_signature(
            "wrong", delivery.headers[SIGNATURE_HEADER.lower()], delivery.body
        )
    document = orjson.loads(second.body)
    assert document["id"] == request_id
    assert document["status"] == "completed"
    assert document["result"]["order"] == request_id
    assert second.headers["host"] == f"127.0.0.1:{receiver.port}"
    rows = await delivery_rows_once(gw, lambda rows: rows[0].status == "delivered", 2.5)
    assert [(row.status, row.attempts) for row in rows] == [("delivered", 2)]
    assert double.messages[0].reply_mode == "async"


async def test_each_try_of_a_callback_is_a_span_of_the_request_s_trace_and_sends_it(
    gw: RunningGateway, double: OrchestratorDouble, receiver: CallbackReceiver
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        receiver.statuses = [500]
        response = await gw.client.post(
            "/api/v1/orders",
            json=order(),
            headers={
                "Callback-Url": receiver.url(),
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            },
        )
        assert response.status_code == 202
        await receiver.wait_for(2)
        await eventually(  # the second span ends just after its POST was answered
            lambda: len(_named(exporter, "gateway callback POST")) == 2,
            timeout_s=10,
            what="the second callback POST span",
        )
    finally:
        tracing.disable()
        provider.shutdown()
    [final] = _named(exporter, "gateway final reply")
    tries = sorted(_named(exporter, "gateway callback POST"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {}).get("http.response.status_code") for s in tries] == [500, 200]
    assert [s.status.status_code for s in tries] == [StatusCode.ERROR, StatusCode.UNSET]
    for span, delivery in zip(tries, receiver.received, strict=True):
        assert span.kind == SpanKind.CLIENT
        assert f"{span.context.trace_id:032x}" == trace_id
        assert span.parent is not None and span.parent.span_id == final.context.span_id
        sent = delivery.headers["traceparent"]
        assert sent == f"00-{trace_id}-{span.context.span_id:016x}-01"


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_callback_redirects_are_not_followed(
    gw: RunningGateway, double: OrchestratorDouble, receiver: CallbackReceiver
) -> None:
    receiver.statuses = [307]
    await gw.client.post("/api/v1/orders", json=order(), headers={"Callback-Url": receiver.url()})
    await receiver.wait_for(2)
    assert [r.path for r in receiver.received] == ["/hook", "/hook"]


async def test_a_pending_callback_survives_the_gateway_and_is_sent_by_the_next(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    receiver = CallbackReceiver()
    from tests.servers.tansu import free_port

    receiver.port = free_port()  # nothing listens yet: every try fails
    first = await make_gateway("gw-first", callback_backoff_s=0.1, callback_backoff_max_s=0.2)
    response = await first.client.post(
        "/api/v1/orders", json=order(), headers={"Callback-Url": receiver.url()}
    )
    assert response.status_code == 202
    rows = await delivery_rows_once(first, lambda rows: rows[0].attempts >= 2, 5)
    assert rows[0].status == "pending" and "ConnectError" in (rows[0].last_error or "")
    await first.gateway.stop()
    server, task = await start_receiver(receiver)
    try:
        second = await make_gateway("gw-second")
        await receiver.wait_for(1)
        assert orjson.loads(receiver.received[0].body)["id"] == response.json()["id"]
        rows = await delivery_rows_once(second, lambda rows: rows[0].status == "delivered", 2.5)
        assert rows[0].status == "delivered"
    finally:
        await stop_receiver(server, task)


async def test_callback_to_a_private_address_is_refused_at_accept_time(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    running = await make_gateway("gw-ssrf", callback_allowed_hosts=["*"])
    for url in (
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        "http://example.com/hook",
        "ftp://example.com/hook",
    ):
        response = await running.client.post(
            "/api/v1/orders", json=order(), headers={"Callback-Url": url}
        )
        assert response.status_code == 422, url
        assert response.json()["type"].endswith("callback-refused")
    assert not double.starts


async def test_final_replies_with_a_callback_url_from_kafka_clients_are_delivered_once(
    gw: RunningGateway, receiver: CallbackReceiver
) -> None:
    from sagaway.messaging.envelope import Message

    reply = Message(
        message_type="reply",
        payload={
            "saga_id": "5d0c2a4e-0000-4000-8000-000000000001",
            "saga_type": "place-order",
            "status": "completed",
            "result": {"ok": True},
            "failure": None,
        },
        outcome="success",
        causation_id="5d0c2a4e-0000-4000-8000-0000000000aa",
        correlation_id="client-request-1",
        saga_id="5d0c2a4e-0000-4000-8000-000000000001",
        saga_type="place-order",
        extra_headers=(("callback-url", receiver.url("/from-kafka")),),
    )
    record = reply.to_record(gw.gateway.callback_topic)
    await gw.transport.produce([record, record])  # delivered twice: one callback
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1
    delivered = receiver.received[0]
    assert delivered.path == "/from-kafka"
    assert verify_signature(
        CALLBACK_SECRET, delivered.headers[SIGNATURE_HEADER.lower()], delivered.body
    )
    assert orjson.loads(delivered.body)["id"] == "client-request-1"
