"""Poison on every topic of a running system — the orchestrator (orchestrator.requests/replies),
the three example participants (<svc>.requests) and the gateway (gateway.replies,
gateway.callbacks) — interleaved with real sagas started through the gateway.

Hypothesis makes the poison: random bytes, random/missing/duplicated/non-UTF-8 headers, valid
envelopes carrying a value that is not a JSON object (all → `<topic>.dlq` with `dlq-error`), and
well-formed messages that make no sense (replies for unknown sagas, steps and attempts; start
commands with an unknown saga type or an invalid input; commands with unknown verbs or wrong
payloads; gateway replies for unknown requests) which are answered or recorded as
docs/messages.md says. Every consumer keeps running, every real saga completes, and the business
rows hold exactly what the real sagas did."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from examples.place_order.audit import audit, load_snapshot
from examples.place_order.models import charges, reservations, shipments
from gateway.app import Gateway, create_gateway_app
from orchestrator.models import saga_instances, saga_steps
from orchestrator.registry import load_registry
from sagaway.messaging.envelope import EnvelopeError, Message
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from tests.gateway.conftest import ORDERS_ROUTE, gateway_relay, order
from tests.harness.stack import EXAMPLE_SERVICES, Servers, Stack, open_stack
from tests.harness.waiting import eventually

SAGA_MODULES = ["examples.place_order.saga"]
EXAMPLES_PER_TOPIC = 40
REAL_SAGAS = 16
SAGA_TYPE = "place-order"
STEPS = ["reserve-stock", "charge-payment", "schedule-shipping"]
LATE_REPLIES = 40

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
int64 = st.integers(-(2**63), 2**63 - 1)
header_name = st.text(min_size=1, max_size=20)
raw_headers = st.lists(st.tuples(header_name, st.binary(max_size=40)), max_size=6)
json_not_object = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.lists(int64, max_size=3),
)
json_object = st.dictionaries(text, st.one_of(st.none(), int64, text), max_size=4)


def envelope(kind: str, **fields: str) -> list[tuple[str, bytes]]:
    """The headers of a well-formed message of `kind` (command or reply)."""
    headers = {
        "message-id": str(uuid.uuid4()),
        "message-type": kind,
        "sent-at": "2026-11-26T16:00:00.000000Z",
        **fields,
    }
    if kind == "reply":
        headers.setdefault("outcome", "success")
        headers.setdefault("causation-id", str(uuid.uuid4()))
    return [(k, v.encode()) for k, v in headers.items()]


@st.composite
def unparseable(draw: st.DrawFn, topic: str, command: str) -> Record:
    """A record the envelope parser refuses: the consumer must dead-letter it."""
    kind = "reply" if topic.endswith("replies") or "callbacks" in topic else "command"
    good = envelope(kind, command=command)
    choice = draw(st.integers(0, 4))
    value: bytes = orjson.dumps({"x": 1})
    if choice == 0:  # random bytes and headers
        headers, value = draw(raw_headers), draw(st.binary(max_size=200))
    elif choice == 1:  # a required header missing
        missing = draw(st.sampled_from(["message-id", "message-type", "sent-at"]))
        headers = [h for h in good if h[0] != missing]
    elif choice == 2:  # a known header twice
        name, raw = draw(st.sampled_from(good))
        headers = [*good, (name, raw)]
    elif choice == 3:  # a header that is not UTF-8
        name = draw(st.sampled_from([h[0] for h in good] + ["saga-id", "principal"]))
        headers = [h for h in good if h[0] != name] + [(name, b"\xff\xfe" + draw(st.binary()))]
    else:  # a valid envelope whose value is not a JSON object
        headers, value = good, orjson.dumps(draw(json_not_object))
    key = f"poison-{uuid.uuid4()}".encode()
    record = Record(topic=topic, value=value, key=key, headers=tuple(headers))
    try:
        Message.from_record(record)
    except EnvelopeError:
        return record
    raise AssertionError("generated a parseable record")  # never: each choice breaks a rule


@st.composite
def nonsense(draw: st.DrawFn, topic: str, service: str, reply_to: str) -> tuple[Record, str]:
    """A well-formed message that makes no sense here, and what is expected of it."""
    saga_id = str(uuid.uuid4())
    payload = orjson.dumps(draw(json_object))
    if service == "orchestrator.requests":
        saga_type = draw(st.sampled_from([SAGA_TYPE, "no-such-saga", draw(text) or "x"]))
        headers = envelope(
            "command",
            command="orchestrator.start",
            **{
                "saga-id": saga_id,
                "correlation-id": saga_id,
                "saga-type": saga_type,
                "reply-to": reply_to,
                "reply-mode": "async",
            },
        )
        return Record(topic, payload, saga_id.encode(), tuple(headers)), "failed-start:" + saga_id
    if service in ("orchestrator.replies", "gateway.replies", "gateway.callbacks"):
        headers = envelope(
            "reply",
            **{
                "saga-id": saga_id,
                "correlation-id": saga_id,
                "saga-step": draw(text) or "s",
                "attempt": str(draw(st.integers(1, 5))),
                "saga-type": SAGA_TYPE,
            },
        )
        return Record(topic, payload, saga_id.encode(), tuple(headers)), "ignored"
    verb = draw(st.sampled_from(["reserve", "charge", "schedule", "explode", draw(text) or "v"]))
    headers = envelope(
        "command",
        command=f"{service}.{verb}",
        **{
            "saga-id": saga_id,
            "correlation-id": saga_id,
            "saga-type": SAGA_TYPE,
            "saga-step": "poison",
            "attempt": "1",
            "reply-to": reply_to,
        },
    )
    return Record(topic, payload, saga_id.encode(), tuple(headers)), "no-business-change"


@st.composite
def late_reply(draw: st.DrawFn, topic: str, saga_ids: list[str]) -> Record:
    """A reply for a real saga that answers no command it sent: an unknown step, attempt or
    causation. Recorded and ignored; the saga does not move."""
    saga_id = draw(st.sampled_from(saga_ids))
    headers = envelope(
        "reply",
        outcome=draw(st.sampled_from(["success", "failure"])),
        **{
            "saga-id": saga_id,
            "correlation-id": saga_id,
            "saga-type": SAGA_TYPE,
            "saga-step": draw(st.sampled_from([*STEPS, "no-such-step"])),
            "attempt": str(draw(st.integers(1, 9))),
        },
    )
    payload = {"reason": "poison", **draw(json_object)}
    return Record(topic, orjson.dumps(payload), saga_id.encode(), tuple(headers))


@st.composite
def second_final_reply(draw: st.DrawFn, topic: str, request_ids: list[str]) -> Record:
    """Another final reply for a request the gateway already answered: it changes nothing."""
    request_id = draw(st.sampled_from(request_ids))
    status = draw(st.sampled_from(["compensated", "failed"]))
    headers = envelope(
        "reply",
        outcome="failure",
        **{
            "saga-id": request_id,
            "correlation-id": request_id,
            "saga-type": SAGA_TYPE,
            "reply-mode": "sync",
        },
    )
    payload = {
        "saga_id": request_id,
        "saga_type": SAGA_TYPE,
        "status": status,
        "result": None,
        "failure": {"step": draw(st.sampled_from(STEPS)), "reason": draw(text)},
    }
    return Record(topic, orjson.dumps(payload), request_id.encode(), tuple(headers))


async def wait_handled(processor: Any, count: int, timeout_s: float = 30.0) -> None:
    """Until `processor` has handled (or dead-lettered) `count` records in all."""
    await eventually(
        lambda: processor.handled + processor.dead_lettered >= count,
        timeout_s=timeout_s,
        what=lambda: f"{processor!r} to catch up: {processor.handled}",
    )


def generate(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of `strategy`, drawn by Hypothesis' engine (shrinking is irrelevant:
    the system's reaction is checked afterwards, on all of them together)."""
    out: list[Any] = []

    @settings(
        max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out[:count]


@contextlib.asynccontextmanager
async def running_gateway(system: Stack) -> AsyncIterator[tuple[Gateway, Any]]:
    """A gateway on its own database, joined to the system's broker and topics."""
    settings = system.service_settings("gateway").replace(
        database_url=system.urls["gateway"],
        sagas=SAGA_MODULES,
        routes=[ORDERS_ROUTE],
        gateway_pending_poll_ms=50,
        rate_limit_per_s=0,
        callback_secret=SecretStr("poison-secret"),
        callback_allowed_hosts=["127.0.0.1"],
    )
    engine = system.engines["gateway"]
    transport = await connect_transport(settings.messaging)
    app = create_gateway_app(
        settings.gateway,
        load_registry(SAGA_MODULES),
        engine,
        transport,
        relay=gateway_relay(settings, engine, transport),
        manage_lifecycle=False,
    )
    gateway: Gateway = app.state.gateway
    try:
        await gateway.start()
        await gateway.replier.processor.wait_assigned()
        yield gateway, app
    finally:
        await gateway.stop()
        await transport.close()


async def read_all(system: Stack, topics: list[str], want: int, timeout_s: float) -> list[Record]:
    """Every record on `topics` (a fresh consumer group), once `want` have arrived."""
    subscription = system.client.transport.subscribe(
        f"{system.settings.messaging.topic_prefix}dlq-reader", topics
    )
    await subscription.start()
    found: list[Record] = []

    async def enough() -> bool:
        found.extend(await subscription.fetch(500, 200))
        return len(found) >= want

    try:
        await eventually(
            enough,
            timeout_s=timeout_s,
            what=lambda: f"{want} dead letters (got {len(found)})",
            interval_s=0,
        )
        while batch := await subscription.fetch(500, 500):  # and whatever else is there
            found.extend(batch)
    finally:
        await subscription.close()
    return found


@pytest.fixture(params=["embedded", "kafka"])
async def poisoned_system(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The orchestrator and the example participants running — on the embedded broker and
    SQLite, or on tansu and PostgreSQL (WAL relays) — and a database for the gateway."""
    kind = str(request.param)
    services = (*EXAMPLE_SERVICES, "gateway")
    system = await open_stack(kind, tmp_path / "data", Servers.of(kind, request), services)
    try:
        await system.roles.start_orchestrator(load_registry(SAGA_MODULES))
        await system.roles.start_examples()
        yield system
    finally:
        await system.close()


@pytest.mark.timeout(120)
async def test_poison_on_every_topic_is_dead_lettered_or_ignored_and_real_sagas_complete(
    poisoned_system: Stack,
) -> None:
    system = poisoned_system
    topics = TopicNames(system.settings.messaging.topic_prefix)
    targets = {
        "orchestrator.requests": (topics.requests("orchestrator"), "orchestrator.start"),
        "orchestrator.replies": (topics.replies("orchestrator"), "orchestrator.start"),
        "inventory": (topics.requests("inventory"), "inventory.reserve"),
        "payments": (topics.requests("payments"), "payments.charge"),
        "shipping": (topics.requests("shipping"), "shipping.schedule"),
        "gateway.replies": (topics.named("gateway.replies"), "gateway.reply"),
        "gateway.callbacks": (topics.named("gateway.callbacks"), "gateway.callback"),
    }
    garbage: list[Record] = []
    sensible: list[tuple[Record, str]] = []
    reply_topic = system.client.reply_topic
    for service, (topic, command) in targets.items():
        garbage += generate(unparseable(topic, command), EXAMPLES_PER_TOPIC)
        sensible += generate(nonsense(topic, service, reply_topic), EXAMPLES_PER_TOPIC // 2)
    # Always, whatever Hypothesis drew: a NUL in the input (PostgreSQL cannot store it) ends
    # `failed` with a reply; a NUL in the saga-type header is dead-lettered.
    nul_input, nul_type = str(uuid.uuid4()), str(uuid.uuid4())
    for saga_id, saga_type, body in (
        (nul_input, SAGA_TYPE, {**order(), "customer_id": "c-1\u0000"}),
        (nul_type, "place\u0000order", order()),
    ):
        headers = envelope(
            "command",
            command="orchestrator.start",
            **{
                "saga-id": saga_id,
                "correlation-id": saga_id,
                "saga-type": saga_type,
                "reply-to": reply_topic,
                "reply-mode": "async",
            },
        )
        record = Record(
            topics.requests("orchestrator"), orjson.dumps(body), saga_id.encode(), tuple(headers)
        )
        sensible.append((record, "failed-start:" + saga_id))
    gen = sensible + [(r, "dlq") for r in garbage]

    async with running_gateway(system) as (gateway, app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw.test", timeout=30
        ) as client:

            async def real(n: int) -> str:
                response = await client.post(
                    "/api/v1/orders",
                    json=order(customer=f"c-{n + 1}"),
                    headers={"Prefer": "wait=20"},
                )
                assert response.status_code == 200, response.text
                return str(response.json()["id"])

            async def poison() -> None:
                records = [r for r, _ in gen]
                for i in range(0, len(records), 20):
                    await system.client.transport.produce(records[i : i + 20])
                    await asyncio.sleep(0.02)

            results = await asyncio.gather(poison(), *(real(n) for n in range(REAL_SAGAS)))
            real_ids = {str(i) for i in results[1:]}

            # Then replies that answer nothing the real (now finished) sagas sent, and second
            # final replies for requests already answered: nothing moves.
            async def saga_rows() -> dict[str, dict[str, Any]]:
                query = sa.select(saga_instances).where(saga_instances.c.id.in_(sorted(real_ids)))
                return {row["id"]: row for row in await system.rows("orchestrator", query)}

            async def ignored_steps() -> int:
                query = sa.select(sa.func.count().label("count")).where(
                    saga_steps.c.saga_id.in_(sorted(real_ids)), saga_steps.c.status == "ignored"
                )
                return int((await system.rows("orchestrator", query))[0]["count"])

            before = await saga_rows()
            ignored_before = await ignored_steps()
            ids = sorted(real_ids)
            late = generate(late_reply(topics.replies("orchestrator"), ids), LATE_REPLIES)
            seconds = generate(second_final_reply(topics.named("gateway.replies"), ids), 20)
            orchestrator = system.roles.orchestrator.processor
            replier = gateway.replier.processor
            expect_orchestrator = orchestrator.handled + orchestrator.dead_lettered + len(late)
            expect_replier = replier.handled + replier.dead_lettered + len(seconds)
            lettered_before = orchestrator.dead_lettered
            await system.client.transport.produce(late + seconds)
            await wait_handled(orchestrator, expect_orchestrator)
            await wait_handled(replier, expect_replier)
            after = await saga_rows()
            changed = {
                i: {
                    k: (before[i][k], after[i][k]) for k in before[i] if before[i][k] != after[i][k]
                }
                for i in before
                if after[i] != before[i]
            }
            assert not changed, changed
            # Each is recorded as ignored, or — one the database cannot store (a NUL in JSON on
            # PostgreSQL) — dead-lettered.
            lettered = orchestrator.dead_lettered - lettered_before
            assert await ignored_steps() + lettered == ignored_before + len(late)
            for request_id in ids:
                response = await client.get(f"/api/v1/requests/{request_id}")
                assert response.json()["status"] == "completed", response.text

        dlq_topics = sorted({TopicNames.dlq(t) for t, _ in targets.values()})
        letters = await read_all(system, dlq_topics, len(garbage), timeout_s=30)
        consumers = {
            "orchestrator": system.roles.orchestrator.processor,
            **{
                name: svc.runner.processor
                for name, svc in system.roles.services.items()
                if svc.runner
            },
            "gateway replier": gateway.replier.processor,
            "gateway callback intake": gateway.callback_intake,
        }
        assert len(consumers) == 6
        for name, processor in consumers.items():
            assert processor.running, f"the {name} consumer stopped"

    # Every unparseable record is in its topic's DLQ, with the error and where it came from.
    by_key = {bytes(r.key or b""): r for r in letters}
    for record in garbage:
        letter = by_key.get(bytes(record.key or b""))
        assert letter is not None, f"not dead-lettered: {record}"
        assert letter.topic == TopicNames.dlq(record.topic)
        letter_headers = dict(letter.headers)
        assert letter_headers.get("dlq-error"), letter
        assert letter_headers["dlq-source-topic"] == record.topic.encode()
        assert letter.value == record.value

    # Starts with an unknown type or an invalid input end `failed` at once, with a final reply.
    failed_starts = [e.split(":", 1)[1] for _, e in sensible if e.startswith("failed-start:")]
    statuses = await system.statuses([*real_ids, *failed_starts])
    assert {i: statuses.get(i) for i in real_ids} == {i: "completed" for i in real_ids}
    stored_failed = [i for i in failed_starts if i in statuses]
    assert nul_input in stored_failed and nul_type not in stored_failed
    nul_reply = await system.client.final_reply(nul_input)
    assert "NUL" in nul_reply.payload["failure"]["reason"]
    for saga_id in failed_starts:
        if saga_id not in statuses:
            # A NUL in a header (the saga type here) cannot even be stored as a failed saga:
            # it is dead-lettered, saying why.
            letter = by_key.get(saga_id.encode())
            assert letter is not None, f"start {saga_id} neither failed nor dead-lettered"
            letter_headers = dict(letter.headers)
            assert b"NUL" in letter_headers["dlq-error"], letter
            assert b"\x00" in letter_headers["saga-type"], letter
            continue
        assert statuses[saga_id] == "failed", saga_id
        reply = await system.client.final_reply(saga_id)
        assert reply.payload["status"] == "failed" and reply.payload["failure"]["step"] is None

    # No other saga exists, and the business rows are exactly the real sagas'.
    all_sagas = await system.rows("orchestrator", sa.select(saga_instances.c.id))
    assert {row["id"] for row in all_sagas} == real_ids | set(stored_failed)
    for service, table in (
        ("inventory", reservations),
        ("payments", charges),
        ("shipping", shipments),
    ):
        rows = await system.rows(service, sa.select(table.c.order_id))
        assert {row["order_id"] for row in rows} == real_ids, service
    snapshot = await load_snapshot(
        system.engines["inventory"],
        system.engines["payments"],
        system.engines["shipping"],
        system.engines["orchestrator"],
    )
    report = audit(snapshot)
    # The starts refused on arrival are `failed` by design (docs/messages.md): nothing to undo.
    violations = [
        v
        for v in report.violations
        if not (v.rule == "saga-failed" and v.subject in set(stored_failed))
    ]
    assert not violations, report.lines()
