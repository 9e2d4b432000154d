"""The timer loop sleeps until a deadline, not on a short poll: a timer the orchestrator commits
wakes it, so a step timeout fires on time even when the look for timers written elsewhere is
minutes apart (docs/benchmarks.md, round six)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.engine.rules import message_id_for
from orchestrator.registry import SagaRegistry
from tests.harness.stack import Servers, Stack, open_stack
from tests.orchestrator import sagas

REGISTRY = SagaRegistry([sagas.three_steps])


@pytest.fixture
async def slow_look_stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    system = await open_stack(
        "embedded",
        tmp_path / "data",
        Servers.of("embedded", request),
        ("orchestrator", "double"),
        # Far longer than the test may take: only the wake-up can fire the timeout in time.
        timer_poll_interval_ms=600_000,
    )
    try:
        await system.roles.start_double()
        await system.roles.start_orchestrator(REGISTRY)
        yield system
    finally:
        await system.close()


async def test_a_step_timeout_fires_on_time_though_the_timer_look_is_minutes_apart(
    slow_look_stack: Stack,
) -> None:
    system = slow_look_stack
    saga_id = str(uuid.uuid4())
    await system.client.start_sagas(
        [(saga_id, "test-three-steps", {"drop_first": "alpha.reserve"})]
    )
    # The first command is lost: only its timeout (1 s), then the backoff timer, re-send it.
    assert await system.wait_terminal([saga_id], 20) == {saga_id: "completed"}
    assert message_id_for(saga_id, "forward", "reserve") in system.roles.double.dropped
