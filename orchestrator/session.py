"""`SagaSession`, the unit of work of one orchestrator transaction: the sagas it touches are
loaded once, advanced in memory by the engine, and written once. The consumer, the timer loop and
operator actions all use it, so every path writes a saga the same way.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator import saga_rows_sqlite as sqlite_rows
from orchestrator.dsl import SagaDefinition
from orchestrator.engine.decide import decide
from orchestrator.engine.effects import Decision, Final, StepRecord
from orchestrator.engine.events import Event, Start
from orchestrator.engine.state import new_saga
from orchestrator.messages import command_message, final_reply
from orchestrator.metrics import (
    SAGA_CONFLICTS,
    SAGAS_FINISHED,
    SAGAS_STARTED,
    UNKNOWN_DEFINITION,
)
from orchestrator.registry import SagaRegistry, UnknownSagaType
from orchestrator.saga_rows import (
    DELETE_TIMERS,
    INSERT_SAGAS,
    INSERT_SEARCH_KEYS,
    INSERT_STEPS,
    INSERT_TIMERS,
    LOAD_SAGAS,
    LOAD_SAGAS_LOCKED,
    LOAD_TIMERS,
    POSTGRES_UPDATE,
    POSTPONE_TIMERS,
    SQLITE_UPDATE,
    LoadedSaga,
    TimerKey,
    live_timer_keys,
    postgres_update_params,
    sqlite_update_params,
    step_row,
    timer_key,
    timer_row,
    utc,
)
from sagaway.messaging.envelope import Message
from sagaway.messaging.partition_counts import PartitionCounts
from sagaway.messaging.topics import TopicNames
from sagaway.outbox.writer import add_to_outbox
from sagaway.sqlite.direct import holding_inline_transaction

log = logging.getLogger("sagaway.orchestrator")


class SagaConflict(RuntimeError):
    """Another transaction changed a saga since it was loaded (optimistic lock); retry."""


def _has_nul(value: Any) -> bool:
    """True when a decoded JSON value holds U+0000 in a string or a key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in str(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class SagaSession:
    """The sagas one transaction touches: loaded once, advanced in memory, written once.

    Use: `await load(ids)`, then `start(...)` / `apply(id, event)` in order, then `await flush()`
    inside the caller's transaction; `flush` raises SagaConflict when another transaction
    changed one of the sagas meanwhile (the caller rolls back and retries).
    """

    def __init__(
        self,
        conn: AsyncConnection,
        registry: SagaRegistry,
        topics: TopicNames,
        partitions: PartitionCounts | None = None,
    ) -> None:
        self.conn = conn
        self.registry = registry
        self.topics = topics
        # The broker's counts, stamped on a saga the first time it sends to a topic; None (an
        # operator's action on a saga that has sent already): commands use the saga's stamps.
        self.partitions = partitions
        self.sagas: dict[str, LoadedSaga] = {}
        self.missing: set[str] = set()
        self.step_rows: list[dict[str, Any]] = []
        self.messages: list[tuple[str, Message]] = []
        self.timers_to_postpone: list[int] = []
        self.timers_to_delete: list[int] = []
        self.finished: list[LoadedSaga] = []
        # The earliest due time (epoch seconds) of the timers this session wrote: once committed,
        # the timer loop is told, so it sleeps until a deadline instead of polling for one.
        self.earliest_due: float | None = None
        # The traceparent of the span handling the event being applied (tracing on); commands
        # and replies it causes are its children. None: children of the saga's origin.
        self.trace_parent: str | None = None

    # -- loading ------------------------------------------------------------------------------

    async def load(self, saga_ids: Iterable[str], *, skip_locked: bool = False) -> set[str]:
        """Load these sagas (one query) and their timers (one more); returns the ids loaded.

        On PostgreSQL the saga rows are locked `FOR UPDATE`, in id order, so every writer of a
        saga (and of its timers, which are only written under that lock) takes its locks in the
        same order: no deadlocks, and no lost optimistic-lock race on a busy saga. With
        `skip_locked`, sagas another transaction holds are left out (the timer loop comes back
        for them). On SQLite the transaction already holds the database's write lock."""
        wanted = sorted({i for i in saga_ids if i not in self.sagas and i not in self.missing})
        if not wanted:
            return set()
        sqlite = holding_inline_transaction(self.conn)
        rows: Sequence[Any]
        timer_rows: Sequence[Any]
        if sqlite is not None:
            rows = sqlite_rows.load_sagas(sqlite, wanted)
            timer_rows = sqlite_rows.load_timers(sqlite, [row.id for row in rows])
        else:
            query = LOAD_SAGAS
            if self.conn.dialect.name == "postgresql":
                query = LOAD_SAGAS_LOCKED[skip_locked]
            rows = (await self.conn.execute(query, {"ids": wanted})).all()
            ids = [row.id for row in rows]
            timer_rows = (await self.conn.execute(LOAD_TIMERS, {"ids": ids})).all()
        for row in rows:
            self.sagas[row.id] = LoadedSaga.from_row(row, self.registry)
        self.missing.update(set(wanted) - {row.id for row in rows})
        for t in timer_rows:
            payload = t.payload if isinstance(t.payload, dict) else {}
            key = (t.kind, t.step, str(payload.get("step_kind", "forward")), t.attempt)
            self.sagas[t.saga_id].timers.append((t.id, key))
        return {row.id for row in rows}

    def get(self, saga_id: str) -> LoadedSaga | None:
        return self.sagas.get(saga_id)

    # -- changing -----------------------------------------------------------------------------

    def start(
        self,
        saga_id: str,
        correlation_id: str,
        saga_type: str,
        body: Any,
        *,
        reply_to: str | None,
        reply_mode: str | None,
        principal: str | None,
        origin: dict[str, Any],
    ) -> LoadedSaga:
        """Create a saga on the latest version of its type and start it. A type that is not
        loaded or an input its model refuses creates the saga `failed` at once, with a final
        reply saying why (so a redelivery is a no-op and the client hears back)."""
        now = time.time()
        reason: str | None = None
        definition: SagaDefinition | None = None
        data: dict[str, Any] = body if isinstance(body, dict) else {"input": body}
        if _has_nul(body):
            # PostgreSQL cannot store U+0000 (text, jsonb): fail it like any invalid input,
            # without keeping it, rather than dead-letter it with no reply to the client.
            data = {}
            reason = "the input contains a NUL character (\\u0000), which cannot be stored"
        else:
            try:
                definition = self.registry.latest(saga_type)
                data = definition.validate_input(body)
            except UnknownSagaType as exc:
                reason = str(exc)
            except ValidationError as exc:
                reason = f"the input does not match saga {saga_type!r}: " + "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}"
                    for e in exc.errors()
                )
            except TypeError as exc:
                reason = str(exc)
        saga = LoadedSaga(
            id=saga_id,
            saga_type=saga_type,
            definition_version=definition.version if definition is not None else 0,
            correlation_id=correlation_id,
            reply_to=reply_to,
            reply_mode=reply_mode,
            principal=principal,
            origin=origin,
            created_at=utc(now),
            version=None,
            state=None,
            definition=definition if reason is None else None,
            status="failed" if reason is not None else "running",
            data=data,
            changed=True,
        )
        self.sagas[saga_id] = saga
        self.missing.discard(saga_id)
        if reason is not None:
            log.info("saga %s (%s) failed on arrival: %s", saga_id, saga_type, reason)
            saga.failure = {"step": None, "reason": reason}
            self._finish(saga, Final("failed", None, saga.failure))
            return saga
        assert definition is not None
        saga.search_keys = definition.search_values(data)
        saga.state = new_saga(saga_id, definition, data)
        SAGAS_STARTED.labels(saga_type).inc()
        self._apply(saga, Start(now))
        return saga

    def apply(self, saga_id: str, event: Event) -> Decision | None:
        """Feed `event` to the saga's definition. None when the saga cannot take events: not
        found, failed on arrival, or its definition version is not loaded (reported, untouched)."""
        saga = self.sagas.get(saga_id)
        if saga is None:
            return None
        if saga.state is None:
            log.info("event for saga %s ignored: it failed on arrival", saga_id)
            return None
        if saga.definition is None:
            self.report_unknown_definition(saga)
            return None
        return self._apply(saga, event)

    def report_unknown_definition(self, saga: LoadedSaga) -> None:
        UNKNOWN_DEFINITION.labels(saga.saga_type, str(saga.definition_version)).inc()
        log.error(
            "saga %s is %s version %d, which is not loaded (loaded: %s); left untouched until "
            "that version is deployed again",
            saga.id,
            saga.saga_type,
            saga.definition_version,
            self._loaded_versions(saga.saga_type),
        )

    def _loaded_versions(self, saga_type: str) -> str:
        try:
            return ", ".join(map(str, self.registry.versions(saga_type)))
        except UnknownSagaType:
            return "none"

    def _apply(self, saga: LoadedSaga, event: Event) -> Decision:
        assert saga.state is not None and saga.definition is not None
        decision = decide(saga.state, event, saga.definition)
        self._record_steps(saga.id, decision.step_records)
        if decision.rejected is not None:
            return decision
        if (
            decision.state is saga.state
            and not decision.commands
            and not decision.timers
            and decision.final is None
        ):
            # Ignored (a late, duplicate or unknown reply; a stale timer): recorded in
            # saga_steps above, but the saga row is not rewritten — no version bump that would
            # make a flood of stray replies conflict with the saga's real progress.
            return decision
        state = decision.state
        saga.state = state
        saga.status = state.status
        saga.data = state.data
        saga.result = state.result
        saga.failure = state.failure
        saga.changed = True
        for cmd in decision.commands:
            self.messages.append(
                command_message(saga, cmd, self.topics, self.trace_parent, self.partitions)
            )
        for timer in decision.timers:
            saga.new_timers[timer_key(timer)] = timer
        if decision.final is not None:
            self._finish(saga, decision.final)
        return decision

    def _record_steps(self, saga_id: str, records: Sequence[StepRecord]) -> None:
        self.step_rows.extend(step_row(saga_id, r) for r in records)

    def _finish(self, saga: LoadedSaga, final: Final) -> None:
        self.finished.append(saga)
        SAGAS_FINISHED.labels(saga.saga_type, final.status).inc()
        reply = final_reply(saga, final, self.topics, self.trace_parent)
        if reply is not None:
            self.messages.append(reply)

    def postpone_timer(self, timer_id: int) -> None:
        """A due timer of a saga that cannot run now: look at it again later."""
        self.timers_to_postpone.append(timer_id)

    def delete_timer(self, timer_id: int) -> None:
        self.timers_to_delete.append(timer_id)

    # -- writing ------------------------------------------------------------------------------

    async def flush(self, postpone_s: float = 60.0) -> None:
        """Write everything the events decided, in bulk, on the caller's transaction."""
        now = datetime.now(UTC)
        conn = self.conn
        inserts = [s for s in self.sagas.values() if s.changed and s.new]
        updates = [s for s in self.sagas.values() if s.changed and not s.new]
        sqlite = holding_inline_transaction(conn)
        if inserts and sqlite is not None:
            sqlite_rows.insert_sagas(sqlite, inserts, now)
        elif inserts:
            await conn.execute(INSERT_SAGAS, [s.insert_row(now) for s in inserts])
            keys = [
                {"saga_id": s.id, "name": name, "value": value}
                for s in inserts
                for name, value in s.search_keys.items()
            ]
            if keys:
                await conn.execute(INSERT_SEARCH_KEYS, keys)
        if updates:
            await self._update(updates, now, sqlite)
        if self.step_rows:
            if sqlite is not None:
                sqlite_rows.insert_steps(sqlite, self.step_rows)
            else:
                await conn.execute(INSERT_STEPS, self.step_rows)
        await self._write_timers(now, postpone_s, sqlite)
        if self.messages:
            await add_to_outbox(conn, self.messages)
        for s in inserts:
            s.version = 1
        for s in updates:
            assert s.version is not None
            s.version += 1
        for s in inserts + updates:
            s.changed = False
            s.stored_status = s.status

    def _note_due(self, due: float) -> None:
        if self.earliest_due is None or due < self.earliest_due:
            self.earliest_due = due

    async def _update(
        self, sagas: list[LoadedSaga], now: datetime, sqlite: sqlite3.Connection | None
    ) -> None:
        if sqlite is not None:
            matched = sqlite_rows.update_sagas(sqlite, sagas, now)
        elif self.conn.dialect.name == "postgresql":
            result = await self.conn.execute(POSTGRES_UPDATE, postgres_update_params(sagas, now))
            matched = len(result.all())
        else:
            result = await self.conn.execute(SQLITE_UPDATE, sqlite_update_params(sagas, now))
            matched = int(result.rowcount)
        if matched != len(sagas):
            SAGA_CONFLICTS.inc()
            raise SagaConflict(
                f"{len(sagas) - matched} of {len(sagas)} saga(s) were changed by another "
                "transaction since they were loaded"
            )

    async def _write_timers(
        self, now: datetime, postpone_s: float, sqlite: sqlite3.Connection | None
    ) -> None:
        delete_ids = list(self.timers_to_delete)
        new_rows: list[dict[str, Any]] = []
        for saga in self.sagas.values():
            if saga.state is None or saga.definition is None:
                continue
            live = live_timer_keys(saga.state)
            stored: set[TimerKey] = set()
            for timer_id, key in saga.timers:
                if key in live and key not in stored:
                    stored.add(key)
                else:
                    delete_ids.append(timer_id)
            for key, timer in saga.new_timers.items():
                if key in live and key not in stored:
                    stored.add(key)
                    new_rows.append(timer_row(saga.id, timer, now))
                    self._note_due(timer.due)
            if delete_ids:
                gone = set(delete_ids)
                saga.timers = [(i, k) for i, k in saga.timers if i not in gone]
            saga.new_timers = {}
        if delete_ids and sqlite is not None:
            sqlite_rows.delete_timers(sqlite, sorted(set(delete_ids)))
        elif delete_ids:
            await self.conn.execute(DELETE_TIMERS, {"ids": sorted(set(delete_ids))})
        if self.timers_to_postpone:
            self._note_due(now.timestamp() + postpone_s)
            await self.conn.execute(
                POSTPONE_TIMERS,
                {
                    "ids": list(self.timers_to_postpone),
                    "new_due_at": utc(now.timestamp() + postpone_s),
                },
            )
        if new_rows and sqlite is not None:
            sqlite_rows.insert_timers(sqlite, new_rows)
        elif new_rows:
            await self.conn.execute(INSERT_TIMERS, new_rows)
        self.timers_to_delete = []
        self.timers_to_postpone = []
