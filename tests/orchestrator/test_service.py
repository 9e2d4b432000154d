"""The orchestrator service end to end, on both stacks: embedded broker + SQLite (polling relays)
and tansu + PostgreSQL (WAL relays). Participants are a scripted double on the real transport,
inbox, outbox and relay (tests/harness/participant_double.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.engine.rules import message_id_for
from orchestrator.metrics import UNKNOWN_DEFINITION
from orchestrator.models import saga_instances, saga_steps, timers
from orchestrator.operator_actions import (
    ActionRejected,
    InvalidAction,
    SagaNotFound,
    apply_action,
)
from orchestrator.registry import SagaRegistry
from orchestrator.service import OrchestratorService
from orchestrator.session import SagaConflict, SagaSession
from sagaway.messaging.envelope import Message
from sagaway.messaging.topics import TopicNames
from sagaway.observability import tracing
from sagaway.outbox.models import outbox
from tests.harness.participant_double import commands_handled, handler_runs
from tests.harness.stack import Servers, Stack, open_stack
from tests.harness.waiting import eventually
from tests.orchestrator import sagas, versioned_sagas

REGISTRY = SagaRegistry([sagas.three_steps, sagas.parallel_group, sagas.typed])
# The orchestrator's tests name their stacks by database; the harness by broker.
KINDS = {"sqlite": "embedded", "postgresql": "kafka"}
SERVICES = ("orchestrator", "double")


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module", params=list(KINDS))
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, OrchestratorService]]:
    data_dir = tmp_path_factory.mktemp(f"orchestrator-{request.param}")
    kind = KINDS[str(request.param)]
    system = await open_stack(kind, data_dir, Servers.of(kind, request), SERVICES)
    try:
        await system.roles.start_double()
        service = await system.roles.start_orchestrator(REGISTRY)
        yield system, service
    finally:
        await system.close()


async def steps_of(system: Stack, saga_id: str) -> list[tuple[str, str, str, int]]:
    async with system.engines["orchestrator"].connect() as conn:
        rows = await conn.execute(
            sa.select(
                saga_steps.c.step_name,
                saga_steps.c.kind,
                saga_steps.c.status,
                saga_steps.c.attempt,
            )
            .where(saga_steps.c.saga_id == saga_id)
            .order_by(saga_steps.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def timer_count(system: Stack, saga_id: str) -> int:
    async with system.engines["orchestrator"].connect() as conn:
        return int(
            await conn.scalar(
                sa.select(sa.func.count()).select_from(timers).where(timers.c.saga_id == saga_id)
            )
            or 0
        )


async def test_three_step_saga_completes_and_answers_its_reply_to(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas([(saga_id, "test-three-steps", {"order": 1})])
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    reply = await system.client.final_reply(saga_id, timeout_s=10)
    assert reply.outcome == "success"
    assert reply.correlation_id == saga_id
    assert reply.payload == {
        "saga_id": saga_id,
        "saga_type": "test-three-steps",
        "status": "completed",
        "result": {
            "order": 1,
            "reserve": "alpha.reserve",
            "charge": "beta.charge",
            "ship": "gamma.ship",
        },
        "failure": None,
    }
    assert await commands_handled(system.engines["double"], saga_id) == [
        "alpha.reserve",
        "beta.charge",
        "gamma.ship",
    ]
    assert await timer_count(system, saga_id) == 0
    statuses = [(name, status) for name, _, status, _ in await steps_of(system, saga_id)]
    assert statuses == [
        ("reserve", "sent"),
        ("reserve", "succeeded"),
        ("charge", "sent"),
        ("charge", "succeeded"),
        ("ship", "sent"),
        ("ship", "succeeded"),
    ]


async def test_rejected_step_three_compensates_in_reverse_order(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas([(saga_id, "test-three-steps", {"reject": "gamma.ship"})])
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "compensated"}
    assert await commands_handled(system.engines["double"], saga_id) == [
        "alpha.reserve",
        "beta.charge",
        "gamma.ship",
        "beta.refund",
        "alpha.release",
    ]
    reply = await system.client.final_reply(saga_id, timeout_s=10)
    assert reply.outcome == "failure"
    assert reply.payload["status"] == "compensated"
    assert reply.payload["failure"] == {"step": "ship", "reason": "gamma.ship said no"}
    assert await timer_count(system, saga_id) == 0


async def test_step_two_times_out_once_and_its_retry_gets_the_stored_reply(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas(
        [(saga_id, "test-three-steps", {"lose_first_reply": "beta.charge"})]
    )
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    # The handler ran once; the re-send (attempt 2, same message id) got the inbox's reply.
    assert await commands_handled(system.engines["double"], saga_id) == [
        "alpha.reserve",
        "beta.charge",
        "gamma.ship",
    ]
    charge = [s for s in await steps_of(system, saga_id) if s[0] == "charge"]
    assert [(status, attempt) for _, _, status, attempt in charge] == [
        ("sent", 1),
        ("timed_out", 1),
        ("sent", 2),
        ("succeeded", 2),
    ]


async def test_lost_command_is_sent_again_after_its_timeout(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas(
        [(saga_id, "test-three-steps", {"drop_first": "alpha.reserve"})]
    )
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    assert message_id_for(saga_id, "forward", "reserve") in system.roles.double.dropped


async def test_a_timeout_and_the_resend_it_causes_are_spans_of_the_saga_s_trace(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        saga_id = new_id()
        await system.client.start_sagas(
            [(saga_id, "test-three-steps", {"drop_first": "alpha.reserve"})]
        )
        assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    finally:
        tracing.disable()
        provider.shutdown()
    ours = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("sagaway.saga_id") == saga_id
    ]
    [start] = [s for s in ours if s.name == "orchestrator start test-three-steps"]
    # The first command is lost: its timeout fires, then the backoff before the re-send.
    [timeout] = [s for s in ours if s.name == "orchestrator timer timeout reserve"]
    [backoff] = [s for s in ours if s.name == "orchestrator timer backoff reserve"]
    for timer in (timeout, backoff):
        assert (timer.attributes or {}).get("sagaway.attempt") == 1
        assert timer.parent is not None and timer.parent.span_id == start.context.span_id
        assert timer.context.trace_id == start.context.trace_id
    sends = [s for s in ours if s.name == "send alpha.reserve"]
    assert [(s.attributes or {}).get("sagaway.attempt") for s in sends] == [1, 2]
    first, resend = sends
    assert first.parent is not None and first.parent.span_id == start.context.span_id
    assert resend.parent is not None and resend.parent.span_id == backoff.context.span_id


async def test_parallel_group_with_a_failing_branch_compensates_the_other_branch(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas([(saga_id, "test-parallel", {"reject": "beta.charge"})])
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "compensated"}
    handled = await commands_handled(system.engines["double"], saga_id)
    assert sorted(handled[:2]) == ["alpha.reserve", "beta.charge"]
    assert handled[2:] == ["alpha.release"]  # the rejected branch did nothing to undo


async def test_redelivered_start_command_never_creates_a_second_saga(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    start = [(saga_id, "test-three-steps", {"n": 1})]
    await system.client.start_sagas(start)
    await system.client.start_sagas(start)
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    await system.client.start_sagas(start)  # once more after it finished
    await asyncio.sleep(0.5)
    async with system.engines["orchestrator"].connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(saga_instances)
            .where(saga_instances.c.correlation_id == saga_id)
        )
    assert count == 1
    assert await commands_handled(system.engines["double"], saga_id) == [
        "alpha.reserve",
        "beta.charge",
        "gamma.ship",
    ]
    assert len(system.client.replies[saga_id]) == 1


async def test_unknown_saga_type_and_invalid_input_fail_at_once_with_a_reply(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    unknown = new_id()
    await system.client.start_sagas([(unknown, "no-such-saga", {"x": 1})])
    assert await system.wait_terminal([unknown], 10) == {unknown: "failed"}
    reply = await system.client.final_reply(unknown, timeout_s=10)
    assert reply.outcome == "failure"
    assert reply.payload["failure"]["step"] is None
    assert "no saga type 'no-such-saga'" in reply.payload["failure"]["reason"]
    assert await commands_handled(system.engines["double"], unknown) == []


async def test_input_the_saga_model_refuses_fails_at_once_with_the_reason(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    bad, good = new_id(), new_id()
    await system.client.start_sagas(
        [(bad, "test-typed", {"amount": -5}), (good, "test-typed", {"amount": 5})]
    )
    assert await system.wait_terminal([bad, good], 10) == {bad: "failed", good: "completed"}
    reply = await system.client.final_reply(bad, timeout_s=10)
    assert reply.payload["failure"]["step"] is None
    assert "amount" in reply.payload["failure"]["reason"]
    assert await commands_handled(system.engines["double"], bad) == []


async def test_records_the_orchestrator_cannot_act_on_go_to_the_dlq_and_block_nothing(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, service = stack
    topics = system.topics
    before = service.processor.dead_lettered
    not_a_start = Message(
        message_type="command", command="orchestrator.explode", payload={}, saga_id=new_id()
    )
    no_step = Message(
        message_type="reply",
        outcome="success",
        causation_id=new_id(),
        payload={},
        saga_id=new_id(),
    )
    saga_id = new_id()
    await system.client.transport.produce(
        [
            not_a_start.to_record(topics.requests("orchestrator")),
            no_step.to_record(topics.replies("orchestrator")),
        ]
    )
    await system.client.start_sagas([(saga_id, "test-three-steps", {})])
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    await eventually(
        lambda: service.processor.dead_lettered >= before + 2,
        timeout_s=10,
        what="the bad records to be dead-lettered",
    )


async def test_a_saga_changed_by_another_transaction_is_a_conflict_not_an_overwrite(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    saga_id = new_id()
    await system.client.start_sagas(
        [(saga_id, "test-three-steps", {"drop_first": "alpha.reserve"})]
    )
    await system.wait_terminal([saga_id], 20)
    async with system.engines["orchestrator"].begin() as conn:
        session = SagaSession(conn, REGISTRY, system.topics)
        await session.load([saga_id])
        loaded = session.sagas[saga_id]
        # As if another writer had committed after our load (a second instance, an operator;
        # the row lock taken by load() makes that impossible to stage for real here).
        assert loaded.version is not None
        loaded.version -= 1
        loaded.changed = True
        with pytest.raises(SagaConflict):
            await session.flush()
        await conn.rollback()


async def test_many_sagas_at_once_all_finish_and_no_command_runs_twice(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, _ = stack
    ids = [new_id() for _ in range(60)]
    plans: list[tuple[str, str, dict[str, Any]]] = []
    for n, saga_id in enumerate(ids):
        data: dict[str, Any] = {"n": n}
        if n % 3 == 1:
            data["reject"] = "gamma.ship"
        plans.append((saga_id, "test-three-steps" if n % 2 else "test-parallel", data))
    await system.client.start_sagas(plans)
    statuses = await system.wait_terminal(ids, 30)
    expected = {
        saga_id: "compensated" if data.get("reject") else "completed" for saga_id, _, data in plans
    }
    assert statuses == expected
    runs, distinct = await handler_runs(system.engines["double"])
    assert runs == distinct


async def test_operator_abort_compensates_a_saga_waiting_on_a_lost_command(
    stack: tuple[Stack, OrchestratorService],
) -> None:
    system, service = stack
    topics = TopicNames(system.settings.messaging.topic_prefix)
    dead_letters = service.processor.dead_lettered
    saga_id = new_id()
    # charge is dropped once: while it waits for its timeout, the operator aborts.
    await system.client.start_sagas([(saga_id, "test-three-steps", {"drop_first": "beta.charge"})])
    await eventually(
        lambda: message_id_for(saga_id, "forward", "charge") in system.roles.double.dropped,
        timeout_s=10,
        what="charge to be sent",
        interval_s=0.02,
    )
    decision = await apply_action(
        system.engines["orchestrator"],
        REGISTRY,
        topics,
        saga_id,
        "abort",
        actor="alice",
        reason="customer called",
    )
    assert decision.state.status == "compensating"
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "compensated"}
    assert "alpha.release" in await commands_handled(system.engines["double"], saga_id)
    with pytest.raises(ActionRejected, match="compensated"):
        await apply_action(
            system.engines["orchestrator"], REGISTRY, topics, saga_id, "abort", actor="bob"
        )
    with pytest.raises(SagaNotFound):
        await apply_action(
            system.engines["orchestrator"], REGISTRY, topics, new_id(), "resume", actor="bob"
        )
    with pytest.raises(InvalidAction):
        await apply_action(
            system.engines["orchestrator"], REGISTRY, topics, saga_id, "retry", actor="bob"
        )
    from orchestrator.models import operator_actions

    async with system.engines["orchestrator"].connect() as conn:
        audit = (
            await conn.execute(
                sa.select(
                    operator_actions.c.action, operator_actions.c.actor, operator_actions.c.outcome
                )
                .where(operator_actions.c.saga_id == saga_id)
                .order_by(operator_actions.c.id)
            )
        ).all()
    assert [tuple(a) for a in audit] == [
        ("abort", "alice", "applied"),
        ("abort", "bob", "rejected"),
    ]
    assert service.processor.dead_lettered == dead_letters


# ---------------------------------------------------------------- versioning (embedded only)


@pytest.fixture
async def embedded_stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    system = await open_stack(
        "embedded", tmp_path / "data", Servers.of("embedded", request), SERVICES
    )
    try:
        await system.roles.start_double()
        yield system
    finally:
        await system.close()


async def wait_handled(system: Stack, saga_id: str, command: str) -> None:
    async def handled() -> bool:
        return command in await commands_handled(system.engines["double"], saga_id)

    await eventually(handled, timeout_s=10, what=f"{command} to be handled", interval_s=0.02)


async def test_saga_started_on_v1_finishes_on_v1_after_v2_is_deployed(
    embedded_stack: Stack,
) -> None:
    system = embedded_stack
    v1_only = SagaRegistry([versioned_sagas.versioned_v1])
    await system.roles.start_orchestrator(v1_only)
    saga_id = new_id()
    await system.client.start_sagas(
        [(saga_id, "test-versioned", {"lose_first_reply": "gamma.ship"})]
    )
    await wait_handled(system, saga_id, "gamma.ship")
    await system.roles.stop_orchestrator()  # v1 is in flight: ship's reply was lost

    both = SagaRegistry([versioned_sagas.versioned_v1, versioned_sagas.versioned_v2])
    await system.roles.start_orchestrator(both)
    try:
        new = new_id()
        await system.client.start_sagas([(new, "test-versioned", {})])
        assert await system.wait_terminal([saga_id, new], 20) == {
            saga_id: "completed",
            new: "completed",
        }
    finally:
        await system.roles.stop_orchestrator()
    async with system.engines["orchestrator"].connect() as conn:
        versions = dict(
            (
                await conn.execute(
                    sa.select(saga_instances.c.id, saga_instances.c.definition_version).where(
                        saga_instances.c.id.in_([saga_id, new])
                    )
                )
            ).all()
        )
    assert versions == {saga_id: 1, new: 2}
    assert await commands_handled(system.engines["double"], new) == ["alpha.reserve"]


async def test_saga_whose_version_is_not_loaded_is_reported_and_left_untouched(
    embedded_stack: Stack,
) -> None:
    system = embedded_stack
    await system.roles.start_orchestrator(SagaRegistry([versioned_sagas.versioned_v1]))
    saga_id = new_id()
    await system.client.start_sagas(
        [(saga_id, "test-versioned", {"lose_first_reply": "gamma.ship"})]
    )
    await wait_handled(system, saga_id, "gamma.ship")
    await system.roles.stop_orchestrator()

    async def row() -> tuple[Any, ...]:
        async with system.engines["orchestrator"].connect() as conn:
            found = (
                await conn.execute(
                    sa.select(
                        saga_instances.c.status, saga_instances.c.version, saga_instances.c.state
                    ).where(saga_instances.c.id == saga_id)
                )
            ).one()
        return tuple(found)

    before = await row()
    steps_before = await steps_of(system, saga_id)
    counter = UNKNOWN_DEFINITION.labels("test-versioned", "1")
    reported = counter._value.get()
    service = await system.roles.start_orchestrator(SagaRegistry([versioned_sagas.versioned_v2]))
    try:
        await eventually(  # ship's timeout falls due: reported
            lambda: counter._value.get() != reported,
            timeout_s=10,
            what="the unknown version to be reported",
        )
        await asyncio.sleep(0.3)
        assert await row() == before
        assert await steps_of(system, saga_id) == steps_before
        assert service.processor.dead_lettered == 0
    finally:
        await system.roles.stop_orchestrator()
    # Deploy v1 again: the saga carries on where it stood.
    await system.roles.start_orchestrator(SagaRegistry([versioned_sagas.versioned_v1]))
    try:
        # The postponed timer waits unknown_version_recheck_s; bring it forward for the test.
        async with system.engines["orchestrator"].begin() as conn:
            await conn.execute(
                sa.update(timers)
                .where(timers.c.saga_id == saga_id)
                .values(due_at=datetime.now(UTC))
            )
        assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    finally:
        await system.roles.stop_orchestrator()


async def test_final_reply_to_a_callback_url_goes_to_the_gateway_callback_topic(
    embedded_stack: Stack,
) -> None:
    system = embedded_stack
    await system.roles.start_orchestrator(REGISTRY)
    try:
        saga_id = new_id()
        start = Message(
            message_type="command",
            command="orchestrator.start",
            payload={},
            saga_id=saga_id,
            saga_type="test-three-steps",
            correlation_id=saga_id,
            reply_to="https://client.example/hooks/orders",
            reply_mode="async",
        )
        await system.client.transport.produce(
            [start.to_record(system.topics.requests("orchestrator"))]
        )
        assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    finally:
        await system.roles.stop_orchestrator()
    async with system.engines["orchestrator"].connect() as conn:
        rows = (
            await conn.execute(
                sa.select(outbox.c.topic, outbox.c.headers, outbox.c.payload).where(
                    outbox.c.key == saga_id, outbox.c.topic.like("%gateway.callbacks")
                )
            )
        ).all()
    assert len(rows) == 1
    topic, headers, payload = rows[0]
    assert topic == system.topics.named("gateway.callbacks")
    assert headers["callback-url"] == "https://client.example/hooks/orders"
    assert headers["causation-id"] == start.message_id
    assert payload["status"] == "completed"


async def test_inbox_rows_older_than_the_retention_are_pruned(embedded_stack: Stack) -> None:
    system = embedded_stack
    service = await system.roles.start_orchestrator(REGISTRY)
    try:
        saga_id = new_id()
        await system.client.start_sagas([(saga_id, "test-three-steps", {})])
        assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
        assert await service.prune_inbox_once() == 0  # a week's retention keeps them
        service.settings = service.settings.model_copy(update={"inbox_retention_s": 0.001})
        await asyncio.sleep(0.01)
        assert await service.prune_inbox_once() == 3  # one per reply
    finally:
        await system.roles.stop_orchestrator()
