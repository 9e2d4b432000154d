"""Chaos: `sagaway orchestrator` as real subprocesses, killed with SIGKILL mid-run.

Invariants: every saga reaches the terminal status its script calls for, and no participant
command runs twice (handler runs behind the inbox == distinct commands)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.registry import SagaRegistry
from sagaway.outbox.poll_relay import PollRelay
from sagaway.outbox.wal_relay import WalRelay
from tests.harness.participant_double import handler_runs
from tests.harness.processes import RoleProcess
from tests.harness.stack import Servers, Stack, open_stack
from tests.harness.waiting import eventually
from tests.orchestrator import sagas

SAGAS = 200
REGISTRY = SagaRegistry([sagas.chaos_three_steps, sagas.chaos_parallel])
# The orchestrator's tests name their stacks by database; the harness by broker.
KINDS = {"sqlite": "embedded", "postgresql": "kafka"}
SERVICES = ("orchestrator", "double")


async def open_chaos_stack(kind: str, data_dir: Path, request: pytest.FixtureRequest) -> Stack:
    """The orchestrator's database and the participant double, for `sagaway orchestrator`
    processes that load tests/orchestrator/sagas.py; nobody collects final replies."""
    system = await open_stack(
        kind,
        data_dir,
        Servers.of(kind, request),
        SERVICES,
        collect_replies=False,
        sagas=["tests.orchestrator.sagas"],
    )
    try:
        await system.roles.start_double()
    except BaseException:
        await system.close()
        raise
    return system


def start_orchestrator(system: Stack, name: str, *, with_relay: bool) -> RoleProcess:
    """`sagaway orchestrator` as process `name`; its output goes to <name>.log."""
    args = ["orchestrator"] + (["--with-relay"] if with_relay else [])
    return system.start_role(name, *args, service="orchestrator")


def owns_partitions(process: RoleProcess) -> bool:
    """Its latest assignment line names some partition."""
    lines = [line for line in process.output().splitlines() if "owns partitions:" in line]
    return bool(lines) and not lines[-1].endswith("owns partitions: none")


@pytest.fixture(params=list(KINDS))
async def chaos_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    system = await open_chaos_stack(KINDS[str(request.param)], tmp_path / "data", request)
    try:
        yield system
    finally:
        await system.close()


def plan_sagas(count: int) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, str]]:
    """A mix: most complete, every 4th is rejected at its last step, every 10th loses a reply
    (so timers and re-sends are in flight when the process dies)."""
    plans: list[tuple[str, str, dict[str, Any]]] = []
    expected: dict[str, str] = {}
    for n in range(count):
        saga_id = str(uuid.uuid4())
        data: dict[str, Any] = {"n": n}
        if n % 4 == 1:
            data["reject"] = "gamma.ship"
        if n % 10 == 3:
            data["lose_first_reply"] = "beta.charge"
        saga_type = "chaos-parallel" if n % 3 == 0 else "chaos-three-steps"
        plans.append((saga_id, saga_type, data))
        expected[saga_id] = "compensated" if "reject" in data else "completed"
    return plans, expected


async def wait_handler_runs(
    system: Stack, count: int, timeout_s: float, log: RoleProcess | None = None
) -> None:
    """Until the double has run its handler `count` times."""

    async def done() -> bool:
        runs, _ = await handler_runs(system.engines["double"])
        return runs >= count

    await eventually(
        done,
        timeout_s=timeout_s,
        what=lambda: f"{count} handler runs" + (f"\n{log.log_tail()}" if log else ""),
    )


async def check_outcomes(system: Stack, expected: dict[str, str], survivor: RoleProcess) -> None:
    try:
        statuses = await system.wait_terminal(expected, 45)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- log:\n{survivor.output()[-3000:]}") from None
    wrong = {i: (s, expected[i]) for i, s in statuses.items() if s != expected[i]}
    if wrong:
        failures = await system.failures(wrong)
        sample = {i: (wrong[i], failures.get(i)) for i in list(wrong)[:5]}
        raise AssertionError(f"{len(wrong)} sagas ended otherwise than scripted: {sample}")
    # Lock order (saga row, then its timers) keeps batches and the timer loop from deadlocking.
    assert "deadlock detected" not in survivor.output()


async def test_kill_9_mid_run_then_restart_finishes_every_saga_without_duplicate_work(
    chaos_stack: Stack,
) -> None:
    system = chaos_stack
    first = start_orchestrator(system, "first", with_relay=True)
    plans, expected = plan_sagas(SAGAS)
    await system.client.start_sagas(plans, with_reply=False)
    await wait_handler_runs(system, SAGAS, 40, first)  # about a third of all the commands
    first.kill9()
    statuses = await system.statuses(expected)
    assert any(s not in ("completed", "compensated") for s in statuses.values()) or len(
        statuses
    ) < len(expected), "everything finished before the kill; the test proved nothing"

    second = start_orchestrator(system, "second", with_relay=True)
    await check_outcomes(system, expected, second)
    runs, distinct = await handler_runs(system.engines["double"])
    assert runs == distinct
    assert second.signal(signal.SIGTERM, 15)[0] == 0, second.output()[-2000:]


async def test_two_instances_share_the_load_and_one_finishes_the_others_sagas(
    chaos_stack: Stack,
) -> None:
    system = chaos_stack
    engine = system.engines["orchestrator"]
    settings = system.service_settings("orchestrator").relay
    transport = system.client.transport
    relay: PollRelay | WalRelay = (
        WalRelay(settings, "orchestrator", engine, transport, heartbeat=False)
        if system.kind == "kafka"
        else PollRelay(settings, "orchestrator", engine, transport, heartbeat=False)
    )
    relay_task = asyncio.create_task(relay.run())
    try:
        a = start_orchestrator(system, "a", with_relay=False)
        b = start_orchestrator(system, "b", with_relay=False)
        await eventually(
            lambda: owns_partitions(a) and owns_partitions(b),
            timeout_s=30,
            what="both instances to own partitions",
        )
        plans, expected = plan_sagas(SAGAS)
        await system.client.start_sagas(plans, with_reply=False)
        await wait_handler_runs(system, SAGAS, 40)
        a.kill9()
        await check_outcomes(system, expected, b)
        runs, distinct = await handler_runs(system.engines["double"])
        assert runs == distinct
        assert b.signal(signal.SIGTERM, 15)[0] == 0
    finally:
        relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await relay_task


async def test_orchestrator_rides_out_a_postgresql_restart_without_dead_letters(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = request.getfixturevalue("postgres_server")
    if not server.restartable:
        pytest.skip("the PostgreSQL server is external and cannot be restarted")
    system = await open_chaos_stack("kafka", tmp_path / "data", request)
    try:
        service = await system.roles.start_orchestrator(REGISTRY)
        plans, expected = plan_sagas(100)
        await system.client.start_sagas(plans, with_reply=False)
        await wait_handler_runs(system, 60, 30)
        await asyncio.to_thread(server.restart, down_for_s=1.0)
        statuses = await system.wait_terminal(expected, 45)
        assert statuses == expected, await system.failures(
            [i for i, s in statuses.items() if s != expected[i]]
        )
        runs, distinct = await handler_runs(system.engines["double"])
        assert runs == distinct
        assert service.processor.dead_lettered == 0
    finally:
        await system.close()
