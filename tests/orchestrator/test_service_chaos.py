"""Chaos: `sagaway orchestrator` as real subprocesses, killed with SIGKILL mid-run.

Invariants: every saga reaches the terminal status its script calls for, and no participant
command runs twice (handler runs behind the inbox == distinct commands)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from orchestrator.registry import SagaRegistry
from orchestrator.service import OrchestratorService
from sagaway.messaging.factory import connect_transport
from sagaway.outbox.poll_relay import PollRelay
from sagaway.outbox.wal_relay import WalRelay
from tests.orchestrator import sagas
from tests.orchestrator.participant_double import handler_runs
from tests.orchestrator.stack import Stack, open_stack

REPO = Path(__file__).resolve().parents[2]
SAGAWAY = str(Path(sys.executable).parent / "sagaway")
SAGAS = 200
REGISTRY = SagaRegistry([sagas.chaos_three_steps, sagas.chaos_parallel])


class OrchestratorProcess:
    """One `sagaway orchestrator` subprocess; its output goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, with_relay: bool) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.log_path = log_path
        self.args = [SAGAWAY, "orchestrator"] + (["--with-relay"] if with_relay else [])
        self.process: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    def start(self) -> OrchestratorProcess:
        self._log = self.log_path.open("a")
        self.process = subprocess.Popen(
            self.args, env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def owns_partitions(self) -> bool:
        """Its latest assignment line names some partition."""
        lines = [line for line in self.log().splitlines() if "owns partitions:" in line]
        return bool(lines) and not lines[-1].endswith("owns partitions: none")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self._log is not None:
            self._log.close()


@pytest.fixture
def processes() -> Iterator[list[OrchestratorProcess]]:
    made: list[OrchestratorProcess] = []
    yield made
    for process in made:
        process.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def chaos_stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    kind = str(request.param)
    extra: dict[str, Any] = {}
    if kind == "postgresql":
        extra = {
            "kafka_bootstrap": request.getfixturevalue("kafka_bootstrap"),
            "postgres_server": request.getfixturevalue("postgres_server"),
            "template": request.getfixturevalue("_migrated_template"),
        }
    system = await open_stack(kind, tmp_path / "data", collect_replies=False, **extra)
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


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def check_outcomes(
    system: Stack, expected: dict[str, str], survivor: OrchestratorProcess
) -> None:
    try:
        statuses = await system.wait_terminal(expected, 45)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- log:\n{survivor.log()[-3000:]}") from None
    wrong = {i: (s, expected[i]) for i, s in statuses.items() if s != expected[i]}
    if wrong:
        failures = await system.failures(wrong)
        sample = {i: (wrong[i], failures.get(i)) for i in list(wrong)[:5]}
        raise AssertionError(f"{len(wrong)} sagas ended otherwise than scripted: {sample}")
    # Lock order (saga row, then its timers) keeps batches and the timer loop from deadlocking.
    assert "deadlock detected" not in survivor.log()


async def test_kill_9_mid_run_then_restart_finishes_every_saga_without_duplicate_work(
    chaos_stack: Stack, processes: list[OrchestratorProcess], tmp_path: Path
) -> None:
    system = chaos_stack
    first = OrchestratorProcess(system.env(), tmp_path / "first.log", with_relay=True)
    processes.append(first.start())
    plans, expected = plan_sagas(SAGAS)
    await system.start_sagas(plans, with_reply=False)

    async def some_work_done() -> bool:
        runs, _ = await handler_runs(system.double_engine)
        return runs >= SAGAS  # about a third of all the commands
    await wait_for(some_work_done, 40, f"{SAGAS} handler runs\n{first.log()[-3000:]}")
    first.kill9()
    statuses = await system.statuses(expected)
    assert any(s not in ("completed", "compensated") for s in statuses.values()) or len(
        statuses
    ) < len(expected), "everything finished before the kill; the test proved nothing"

    second = OrchestratorProcess(system.env(), tmp_path / "second.log", with_relay=True)
    processes.append(second.start())
    await check_outcomes(system, expected, second)
    runs, distinct = await handler_runs(system.double_engine)
    assert runs == distinct
    assert second.terminate() == 0, second.log()[-2000:]


async def test_two_instances_share_the_load_and_one_finishes_the_others_sagas(
    chaos_stack: Stack, processes: list[OrchestratorProcess], tmp_path: Path
) -> None:
    system = chaos_stack
    engine = system.orchestrator_engine
    relay: PollRelay | WalRelay = (
        WalRelay(system.settings.relay, "orchestrator", engine, system.client, heartbeat=False)
        if system.kind == "postgresql"
        else PollRelay(
            system.settings.relay, "orchestrator", engine, system.client, heartbeat=False
        )
    )
    relay_task = asyncio.create_task(relay.run())
    try:
        a = OrchestratorProcess(system.env(), tmp_path / "a.log", with_relay=False)
        b = OrchestratorProcess(system.env(), tmp_path / "b.log", with_relay=False)
        processes.extend([a.start(), b.start()])

        async def both_own_partitions() -> bool:
            return a.owns_partitions() and b.owns_partitions()

        await wait_for(both_own_partitions, 30, "both instances to own partitions")
        plans, expected = plan_sagas(SAGAS)
        await system.start_sagas(plans, with_reply=False)

        async def some_work_done() -> bool:
            runs, _ = await handler_runs(system.double_engine)
            return runs >= SAGAS

        await wait_for(some_work_done, 40, f"{SAGAS} handler runs")
        a.kill9()
        await check_outcomes(system, expected, b)
        runs, distinct = await handler_runs(system.double_engine)
        assert runs == distinct
        assert b.terminate() == 0
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
    system = await open_stack(
        "postgresql",
        tmp_path / "data",
        collect_replies=False,
        kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"),
        postgres_server=server,
        template=request.getfixturevalue("_migrated_template"),
    )
    transport = await connect_transport(system.settings.messaging)
    service = OrchestratorService(
        system.settings.orchestrator,
        REGISTRY,
        system.orchestrator_engine,
        transport,
        relay=system.orchestrator_relay(transport),
    )
    try:
        await service.start()
        plans, expected = plan_sagas(100)
        await system.start_sagas(plans, with_reply=False)

        async def some_work_done() -> bool:
            runs, _ = await handler_runs(system.double_engine)
            return runs >= 60

        await wait_for(some_work_done, 30, "60 handler runs")
        await asyncio.to_thread(server.restart, down_for_s=1.0)
        statuses = await system.wait_terminal(expected, 45)
        assert statuses == expected, await system.failures(
            [i for i, s in statuses.items() if s != expected[i]]
        )
        runs, distinct = await handler_runs(system.double_engine)
        assert runs == distinct
        assert service.processor.dead_lettered == 0
    finally:
        await service.stop()
        await transport.close()
        await system.close()
