"""The timer loop: step timeouts and retry backoffs are rows in `timers`; due ones are fed to the
engine as `TimerFired`, in the same kind of transaction as a consumed batch.

Timers are rows, so they survive restarts: a timer that fell due while no orchestrator ran fires
when one starts. On PostgreSQL the sagas of due timers are locked `FOR UPDATE SKIP LOCKED`, so
several instances fire disjoint timers and never wait on a saga a consumed batch is advancing; on
SQLite the database's write lock serialises them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.engine.effects import TimerKind
from orchestrator.engine.events import TimerFired
from orchestrator.engine.state import COMPENSATION, FORWARD, Kind
from orchestrator.models import timers
from orchestrator.registry import SagaRegistry
from orchestrator.saga_rows import LoadedSaga
from orchestrator.session import SagaConflict, SagaSession
from sagaway.messaging.partition_counts import PartitionCounts
from sagaway.messaging.topics import TopicNames
from sagaway.observability import logs, tracing
from sagaway.observability.backoff import RetryDelay
from sagaway.settings import OrchestratorSettings
from sagaway.storage.database import read_only

log = logging.getLogger("sagaway.orchestrator.timers")


class TimerLoop:
    """Fires due timers until cancelled: `await loop.run()`, or one batch with `fire_due()`.
    `topics` names the topics the commands a timer causes are written to."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        registry: SagaRegistry,
        engine: AsyncEngine,
        topics: TopicNames,
        partitions: PartitionCounts | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.topics = topics
        self.partitions = partitions
        self.postgres = engine.dialect.name == "postgresql"
        self.fired = 0
        self._wake = asyncio.Event()
        # When the loop next looks (loop time; infinite while it is looking, so that a timer
        # committed meanwhile wakes the sleep that follows). A timer due earlier wakes it.
        self._next_look = math.inf

    async def fire_due(self) -> int:
        """Fire at most `timer_batch_size` due timers in one transaction; returns how many were
        taken. Raises SagaConflict if another transaction changed one of their sagas first."""
        now = time.time()
        query = (
            sa.select(
                timers.c.id,
                timers.c.saga_id,
                timers.c.kind,
                timers.c.step,
                timers.c.attempt,
                timers.c.payload,
            )
            .where(timers.c.due_at <= datetime.fromtimestamp(now, UTC))
            .order_by(timers.c.due_at, timers.c.id)
            .limit(self.settings.timer_batch_size)
        )
        spans: list[tracing.Span] = []
        with tracing.ending(spans):
            async with self.engine.begin() as conn:
                candidates = (await conn.execute(query)).all()
                if not candidates:
                    return 0
                session = SagaSession(conn, self.registry, self.topics, self.partitions)
                # Timers are written only under their saga's row lock: lock the sagas (skipping
                # those another transaction holds), then fire the due timers that still exist.
                loaded = await session.load({row.saga_id for row in candidates}, skip_locked=True)
                existing = {
                    timer_id for saga_id in loaded for timer_id, _ in session.sagas[saga_id].timers
                }
                due = [row for row in candidates if row.id in existing]
                for row in due:
                    saga = session.sagas[row.saga_id]
                    span = self._open_span(saga, row)
                    if span is not None:
                        spans.append(span)
                    # The commands the timer causes are children of its span (tracing on).
                    session.trace_parent = tracing.traceparent_of(span) if span else None
                    # Log lines about this timer carry its saga's ids.
                    token = logs.bind(logs.RequestContext(saga.correlation_id, saga.id))
                    try:
                        self._fire(session, saga, row, now)
                    finally:
                        logs.reset(token)
                session.trace_parent = None
                # A fired timer is no longer live for its saga, so flush deletes it.
                await session.flush(postpone_s=self.settings.unknown_version_recheck_s)
        self.fired += len(due)
        return len(due)

    @staticmethod
    def _open_span(saga: LoadedSaga, row: Any) -> tracing.Span | None:
        """With tracing on, the span of firing this timer: a child of the span that started the
        saga, so a timeout and the re-send it causes show in the request's own trace."""
        return tracing.internal_span(
            f"orchestrator timer {row.kind} {row.step}",
            saga.origin.get("traceparent"),
            (
                ("sagaway.service", "orchestrator"),
                ("sagaway.saga_id", saga.id),
                ("sagaway.saga_type", saga.saga_type),
                ("sagaway.saga_step", row.step),
                ("sagaway.timer", row.kind),
                ("sagaway.attempt", row.attempt),
            ),
        )

    @staticmethod
    def _fire(session: SagaSession, saga: LoadedSaga, row: Any, now: float) -> None:
        if saga.state is None:
            session.delete_timer(row.id)  # failed on arrival: nothing to wake
            return
        if saga.definition is None:
            session.report_unknown_definition(saga)
            session.postpone_timer(row.id)
            return
        payload = row.payload if isinstance(row.payload, dict) else {}
        step_kind: Kind = COMPENSATION if payload.get("step_kind") == COMPENSATION else FORWARD
        kind: TimerKind = "backoff" if row.kind == "backoff" else "timeout"
        session.apply(row.saga_id, TimerFired(kind, row.step, step_kind, row.attempt, now))

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest timer is due (negative if overdue); None if none."""
        async with read_only(self.engine) as conn:
            first = await conn.scalar(sa.select(sa.func.min(timers.c.due_at)))
        if first is None:
            return None
        if isinstance(first, str):  # SQLite's MIN() loses the column type
            first = datetime.fromisoformat(first)
        if first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        return float(first.timestamp() - time.time())

    def wake_by(self, due: float) -> None:
        """A timer due at `due` (epoch seconds) was committed: look by then."""
        if time.time() + (self._next_look - asyncio.get_running_loop().time()) > due:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` passed or `wake_by` asked for an earlier look."""
        self._next_look = asyncio.get_running_loop().time() + seconds
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._next_look = math.inf
        self._wake.clear()

    async def run(self) -> None:
        """Fire timers forever: sleep until the next one is due, or until this instance commits
        an earlier one (`wake_by`); timers written elsewhere (another instance, an operator) are
        found by a look every timer_poll_interval at the latest."""
        idle = self.settings.timer_poll_interval_ms / 1000
        backoff = RetryDelay(0.05, self.settings.startup_retry_max_s)
        while True:
            self._next_look = math.inf
            try:
                count = await self.fire_due()
                if count >= self.settings.timer_batch_size:
                    continue
                wait = await self.next_due_in()
            except asyncio.CancelledError:
                raise
            except SagaConflict as exc:
                log.debug("timer batch lost a race, retrying: %s", exc)
                await asyncio.sleep(0.01)
                continue
            except Exception as exc:  # noqa: BLE001 - database down or a deadlock: retry, lose nothing
                log.warning(
                    "timer loop failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    backoff.delay_s,
                )
                await backoff.wait()
                continue
            backoff.reset()
            if wait is None:
                await self._sleep(idle)
            elif wait > 0:
                await self._sleep(min(idle, wait))
            elif count == 0:
                # Due but not ours: another instance holds them (SKIP LOCKED); look again soon.
                await self._sleep(min(idle, 0.02))
