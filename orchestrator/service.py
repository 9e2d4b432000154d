"""The orchestrator service: the shell around the pure engine.

It consumes start commands (`orchestrator.requests`) and participant replies
(`orchestrator.replies`). Each consumed batch is ONE database transaction: replies are deduplicated
through the inbox, starts are idempotent on the correlation id, the sagas the batch touches are
loaded in one query, `decide` runs on each event in order in memory, and then the saga rows
(optimistically locked), step rows, timers and outbox rows are written in bulk. The offsets are
committed only after that transaction, so a crash anywhere redelivers and changes nothing twice.

`SagaSession` is that transaction's unit of work; the timer loop (`timers.py`) and operator
actions (`operator_actions.py`) use it too, so every path writes a saga the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.dsl import SagaDefinition
from orchestrator.engine import (
    AWAITING,
    BACKOFF,
    Decision,
    Event,
    Final,
    Reply,
    SagaState,
    Start,
    StepRecord,
    Timer,
    decide,
    new_saga,
)
from orchestrator.models import saga_instances, saga_steps, timers
from orchestrator.registry import SagaRegistry, UnknownSagaType, UnknownSagaVersion
from sagaway.inbox import claim_many, prune_inbox
from sagaway.messaging.envelope import Message
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.observability import logs, tracing
from sagaway.observability.backoff import RetryDelay
from sagaway.outbox.choose import make_relay
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings import Settings

log = logging.getLogger("sagaway.orchestrator")

SERVICE = "orchestrator"
START_COMMAND = "orchestrator.start"
INBOX_CONSUMER = "orchestrator"
# Final replies whose reply-to is a URL go here; the gateway's callback sender POSTs them.
CALLBACK_TOPIC = "gateway.callbacks"
CALLBACK_URL_HEADER = "callback-url"
# Inbox keys of replies: a reply is the same message only with the same id AND attempt, so a
# participant that re-sends its stored reply for a later attempt is never mistaken for a duplicate.
INBOX_NAMESPACE = uuid.UUID("0d2f4c55-7a57-4b0e-8a53-6f7263686573")
MAX_SAGA_ID = 36
MAX_CORRELATION_ID = 100
INBOX_PRUNE_INTERVAL_MAX_S = 3600.0

UNKNOWN_DEFINITION = Counter(
    "sagaway_orchestrator_unknown_definition",
    "Events for sagas whose definition (type, version) is not loaded; the saga is left untouched.",
    ["saga_type", "version"],
)
SAGAS_STARTED = Counter(
    "sagaway_orchestrator_sagas_started", "Sagas started, by type.", ["saga_type"]
)
SAGAS_FINISHED = Counter(
    "sagaway_orchestrator_sagas_finished",
    "Sagas that reached a terminal status, by type and status.",
    ["saga_type", "status"],
)
SAGA_CONFLICTS = Counter(
    "sagaway_orchestrator_conflicts",
    "Transactions abandoned because another instance changed one of their sagas first.",
)


class SagaConflict(RuntimeError):
    """Another transaction changed a saga since it was loaded (optimistic lock); retry."""


class InvalidMessage(ValueError):
    """A record on an orchestrator topic is not a start command or reply it can act on."""


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _is_url(reply_to: str) -> bool:
    return reply_to.startswith(("http://", "https://"))


TimerKey = tuple[str, str, str, int]  # (timeout|backoff, step, forward|compensation, attempt)


def _timer_key(timer: Timer) -> TimerKey:
    return (timer.kind, timer.step, timer.step_kind, timer.attempt)


def live_timer_keys(state: SagaState) -> set[TimerKey]:
    """The timers that can still matter: one per command awaiting a reply or backing off."""
    if state.terminal:
        return set()
    keys: set[TimerKey] = set()
    for name, step in state.steps.items():
        for kind, track in (("forward", step.forward), ("compensation", step.compensation)):
            if track.status == AWAITING:
                keys.add(("timeout", name, kind, track.attempt))
            elif track.status == BACKOFF:
                keys.add(("backoff", name, kind, track.attempt))
    return keys


@dataclass(slots=True)
class LoadedSaga:
    """One saga inside a transaction: its row as loaded (or about to be inserted) and its
    state as the events of this transaction leave it."""

    id: str
    saga_type: str
    definition_version: int
    correlation_id: str
    reply_to: str | None
    reply_mode: str | None
    principal: str | None
    origin: dict[str, Any]
    created_at: datetime
    version: int | None  # the row's lock version; None while the row is not inserted yet
    state: SagaState | None  # None: failed on arrival (bad input or unknown type)
    definition: SagaDefinition | None
    status: str
    data: dict[str, Any]
    result: Any = None
    failure: Any = None
    changed: bool = False
    timers: list[tuple[int, TimerKey]] = field(default_factory=list)  # stored: (id, key)
    new_timers: dict[TimerKey, Timer] = field(default_factory=dict)

    @property
    def new(self) -> bool:
        return self.version is None

    def row(self, now: datetime) -> dict[str, Any]:
        """saga_instances column values (without the lock version)."""
        if self.state is not None:
            assert self.definition is not None
            state_json = self.state.to_stored(include_data=False)
            current_step = self.state.current_step(self.definition)
        else:
            state_json = {}
            current_step = None
        state_json["origin"] = self.origin
        return {
            "status": self.status,
            "current_step": current_step,
            "data": self.data,
            "state": state_json,
            "result": self.result,
            "failure": self.failure,
            "updated_at": now,
        }


_SAGA_COLUMNS = (
    saga_instances.c.id,
    saga_instances.c.saga_type,
    saga_instances.c.definition_version,
    saga_instances.c.status,
    saga_instances.c.data,
    saga_instances.c.state,
    saga_instances.c.result,
    saga_instances.c.failure,
    saga_instances.c.correlation_id,
    saga_instances.c.reply_to,
    saga_instances.c.reply_mode,
    saga_instances.c.principal,
    saga_instances.c.created_at,
    saga_instances.c.version,
)

_SQLITE_UPDATE = (
    sa.update(saga_instances)
    .where(
        saga_instances.c.id == sa.bindparam("b_id"),
        saga_instances.c.version == sa.bindparam("b_version"),
    )
    .values(
        status=sa.bindparam("status"),
        current_step=sa.bindparam("current_step"),
        data=sa.bindparam("data", type_=saga_instances.c.data.type),
        state=sa.bindparam("state", type_=saga_instances.c.state.type),
        result=sa.bindparam("result", type_=saga_instances.c.result.type),
        failure=sa.bindparam("failure", type_=saga_instances.c.failure.type),
        updated_at=sa.bindparam("updated_at", type_=saga_instances.c.updated_at.type),
        version=saga_instances.c.version + 1,
    )
)

# One statement for the whole batch on PostgreSQL; RETURNING says which rows matched their version.
_POSTGRES_UPDATE = sa.text(
    """
    UPDATE saga_instances AS s
    SET status = v.status, current_step = v.current_step, data = v.data::jsonb,
        state = v.state::jsonb, result = v.result::jsonb, failure = v.failure::jsonb,
        updated_at = :now, version = s.version + 1
    FROM unnest(CAST(:ids AS varchar[]), CAST(:versions AS integer[]),
                CAST(:statuses AS varchar[]), CAST(:steps AS varchar[]), CAST(:datas AS text[]),
                CAST(:states AS text[]), CAST(:results AS text[]), CAST(:failures AS text[]))
         AS v(id, version, status, current_step, data, state, result, failure)
    WHERE s.id = v.id AND s.version = v.version
    RETURNING s.id
    """
).bindparams(sa.bindparam("now", type_=saga_instances.c.updated_at.type))


# The rest of a saga step's statements, built once (see gateway/store.py's _STORE_RESULT).
_LOAD_SAGAS = (
    sa.select(*_SAGA_COLUMNS)
    .where(saga_instances.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(saga_instances.c.id)
)
_LOAD_SAGAS_LOCKED = {skip: _LOAD_SAGAS.with_for_update(skip_locked=skip) for skip in (False, True)}
_LOAD_TIMERS = sa.select(
    timers.c.id, timers.c.saga_id, timers.c.kind, timers.c.step, timers.c.attempt,
    timers.c.payload,
).where(timers.c.saga_id.in_(sa.bindparam("ids", expanding=True)))  # fmt: skip
_INSERT_SAGAS = saga_instances.insert()
_INSERT_STEPS = saga_steps.insert()
_INSERT_TIMERS = timers.insert()
_DELETE_TIMERS = sa.delete(timers).where(timers.c.id.in_(sa.bindparam("ids", expanding=True)))
_POSTPONE_TIMERS = (
    sa.update(timers)
    .where(timers.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(due_at=sa.bindparam("new_due_at", type_=timers.c.due_at.type))
)
_STARTS_BY_CORRELATION = sa.select(saga_instances.c.id, saga_instances.c.correlation_id).where(
    saga_instances.c.correlation_id.in_(sa.bindparam("ids", expanding=True))
)
_STARTS_BY_ID = sa.select(saga_instances.c.id, saga_instances.c.correlation_id).where(
    saga_instances.c.id.in_(sa.bindparam("ids", expanding=True))
)


def _has_nul(value: Any) -> bool:
    """True when a decoded JSON value holds U+0000 in a string or a key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in str(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class SagaSession:
    """The sagas one transaction touches: loaded once, advanced in memory, written once.

    Use: `await load(ids)`, then `start(...)` / `apply(id, event)` in order, then `await flush()`
    inside the caller's transaction; `flush` raises SagaConflict when another transaction
    changed one of the sagas meanwhile (the caller rolls back and retries).
    """

    def __init__(self, conn: AsyncConnection, registry: SagaRegistry, topics: TopicNames) -> None:
        self.conn = conn
        self.registry = registry
        self.topics = topics
        self.sagas: dict[str, LoadedSaga] = {}
        self.missing: set[str] = set()
        self.step_rows: list[dict[str, Any]] = []
        self.messages: list[tuple[str, Message]] = []
        self.timers_to_postpone: list[int] = []
        self.timers_to_delete: list[int] = []
        self.finished: list[LoadedSaga] = []
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
        query = _LOAD_SAGAS
        if self.conn.dialect.name == "postgresql":
            query = _LOAD_SAGAS_LOCKED[skip_locked]
        rows = (await self.conn.execute(query, {"ids": wanted})).all()
        for row in rows:
            self.sagas[row.id] = self._from_row(row)
        self.missing.update(set(wanted) - {row.id for row in rows})
        timer_rows = (
            await self.conn.execute(_LOAD_TIMERS, {"ids": [row.id for row in rows]})
        ).all()
        for t in timer_rows:
            payload = t.payload if isinstance(t.payload, dict) else {}
            key = (t.kind, t.step, str(payload.get("step_kind", "forward")), t.attempt)
            self.sagas[t.saga_id].timers.append((t.id, key))
        return {row.id for row in rows}

    def _from_row(self, row: Any) -> LoadedSaga:
        state_json = row.state if isinstance(row.state, dict) else {}
        definition: SagaDefinition | None = None
        state: SagaState | None = None
        if "steps" in state_json:
            try:
                definition = self.registry.get(row.saga_type, row.definition_version)
            except (UnknownSagaType, UnknownSagaVersion):
                definition = None
            state = SagaState.from_json(state_json, data=row.data)
        return LoadedSaga(
            id=row.id,
            saga_type=row.saga_type,
            definition_version=row.definition_version,
            correlation_id=row.correlation_id,
            reply_to=row.reply_to,
            reply_mode=row.reply_mode,
            principal=row.principal,
            origin=dict(state_json.get("origin") or {}),
            created_at=row.created_at,
            version=row.version,
            state=state,
            definition=definition,
            status=row.status,
            data=row.data if isinstance(row.data, dict) else {},
            result=row.result,
            failure=row.failure,
        )

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
            created_at=_utc(now),
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
            self.messages.append((self.topics.requests(cmd.service), self._command(saga, cmd)))
        for timer in decision.timers:
            saga.new_timers[_timer_key(timer)] = timer
        if decision.final is not None:
            self._finish(saga, decision.final)
        return decision

    def _record_steps(self, saga_id: str, records: Sequence[StepRecord]) -> None:
        for r in records:
            at = _utc(r.at) if r.at else datetime.now(UTC)
            sent = r.status == "sent"
            self.step_rows.append(
                {
                    "saga_id": saga_id,
                    "step_name": r.step,
                    "kind": r.kind,
                    "status": r.status,
                    "attempt": r.attempt,
                    "command_message_id": r.message_id,
                    "command": r.payload if sent else None,
                    "sent_at": at if sent else None,
                    "replied_at": None if sent else at,
                    "reply_payload": None if sent else r.payload,
                    "error": r.error,
                }
            )

    def _command(self, saga: LoadedSaga, cmd: Any) -> Message:
        topic = self.topics.requests(cmd.service)
        traceparent = tracing.child_traceparent(
            self.trace_parent or saga.origin.get("traceparent"),
            f"send {cmd.command}",
            service=SERVICE,
            destination=topic,
            message_id=cmd.message_id,
            correlation_id=saga.correlation_id,
            saga_id=saga.id,
            saga_step=cmd.step,
            attempt=cmd.attempt,
        )
        return Message(
            message_type="command",
            command=cmd.command,
            payload=cmd.payload,
            message_id=cmd.message_id,
            correlation_id=saga.correlation_id,
            saga_id=saga.id,
            saga_type=saga.saga_type,
            saga_step=cmd.step,
            attempt=cmd.attempt,
            reply_to=self.topics.replies(SERVICE),
            principal=saga.principal,
            traceparent=traceparent,
        )

    def _finish(self, saga: LoadedSaga, final: Final) -> None:
        self.finished.append(saga)
        SAGAS_FINISHED.labels(saga.saga_type, final.status).inc()
        if not saga.reply_to:
            return
        extra: tuple[tuple[str, str], ...] = ()
        topic = saga.reply_to
        if _is_url(saga.reply_to):
            topic = self.topics.named(CALLBACK_TOPIC)
            extra = ((CALLBACK_URL_HEADER, saga.reply_to),)
        traceparent = tracing.child_traceparent(
            self.trace_parent or saga.origin.get("traceparent"),
            f"send final reply ({final.status})",
            service=SERVICE,
            destination=topic,
            correlation_id=saga.correlation_id,
            saga_id=saga.id,
        )
        reply = Message(
            message_type="reply",
            payload={
                "saga_id": saga.id,
                "saga_type": saga.saga_type,
                "status": final.status,
                "result": final.result,
                "failure": final.failure,
            },
            outcome="success" if final.status == "completed" else "failure",
            causation_id=saga.origin.get("message_id") or saga.id,
            correlation_id=saga.correlation_id,
            saga_id=saga.id,
            saga_type=saga.saga_type,
            reply_mode=saga.reply_mode,  # type: ignore[arg-type]
            principal=saga.principal,
            traceparent=traceparent,
            extra_headers=extra,
        )
        self.messages.append((topic, reply))

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
        if inserts:
            await conn.execute(
                _INSERT_SAGAS,
                [
                    {
                        **s.row(now),
                        "id": s.id,
                        "saga_type": s.saga_type,
                        "definition_version": s.definition_version,
                        "correlation_id": s.correlation_id,
                        "reply_to": s.reply_to,
                        "reply_mode": s.reply_mode,
                        "principal": s.principal,
                        "created_at": s.created_at,
                        "version": 1,
                    }
                    for s in inserts
                ],
            )
        if updates:
            await self._update(updates, now)
        if self.step_rows:
            await conn.execute(_INSERT_STEPS, self.step_rows)
        await self._write_timers(now, postpone_s)
        if self.messages:
            await add_to_outbox(conn, self.messages)
        for s in inserts:
            s.version = 1
        for s in updates:
            assert s.version is not None
            s.version += 1
        for s in inserts + updates:
            s.changed = False

    async def _update(self, sagas: list[LoadedSaga], now: datetime) -> None:
        if self.conn.dialect.name == "postgresql":
            rows = [s.row(now) for s in sagas]
            result = await self.conn.execute(
                _POSTGRES_UPDATE,
                {
                    "now": now,
                    "ids": [s.id for s in sagas],
                    "versions": [s.version for s in sagas],
                    "statuses": [r["status"] for r in rows],
                    "steps": [r["current_step"] for r in rows],
                    "datas": [_json_text(r["data"]) for r in rows],
                    "states": [_json_text(r["state"]) for r in rows],
                    "results": [_json_text(r["result"]) for r in rows],
                    "failures": [_json_text(r["failure"]) for r in rows],
                },
            )
            matched = len(result.all())
        else:
            params = [{**s.row(now), "b_id": s.id, "b_version": s.version} for s in sagas]
            result = await self.conn.execute(_SQLITE_UPDATE, params)
            matched = int(result.rowcount)
        if matched != len(sagas):
            SAGA_CONFLICTS.inc()
            raise SagaConflict(
                f"{len(sagas) - matched} of {len(sagas)} saga(s) were changed by another "
                "transaction since they were loaded"
            )

    async def _write_timers(self, now: datetime, postpone_s: float) -> None:
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
                    new_rows.append(
                        {
                            "saga_id": saga.id,
                            "kind": timer.kind,
                            "step": timer.step,
                            "attempt": timer.attempt,
                            "due_at": _utc(timer.due),
                            "payload": {"step_kind": timer.step_kind},
                            "created_at": now,
                        }
                    )
            if delete_ids:
                gone = set(delete_ids)
                saga.timers = [(i, k) for i, k in saga.timers if i not in gone]
            saga.new_timers = {}
        if delete_ids:
            await self.conn.execute(_DELETE_TIMERS, {"ids": sorted(set(delete_ids))})
        if self.timers_to_postpone:
            await self.conn.execute(
                _POSTPONE_TIMERS,
                {
                    "ids": list(self.timers_to_postpone),
                    "new_due_at": _utc(now.timestamp() + postpone_s),
                },
            )
        if new_rows:
            await self.conn.execute(_INSERT_TIMERS, new_rows)
        self.timers_to_delete = []
        self.timers_to_postpone = []


# ---------------------------------------------------------------- consuming


MAX_CONFLICT_RETRIES = 5
# SQLSTATEs worth retrying: serialization failure, deadlock; and by class: 08 connection
# exception, 53 insufficient resources, 57P shutdown / not yet accepting connections.
_TRANSIENT_SQLSTATES = {"40001", "40P01"}
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")


def is_transient(exc: BaseException) -> bool:
    """True for failures that retrying the same transaction later can cure: the database is
    unreachable or restarting, a deadlock victim, SQLite busy."""
    if isinstance(exc, (OSError, ConnectionError, sa.exc.InterfaceError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate is not None:
            code = str(sqlstate)
            return code in _TRANSIENT_SQLSTATES or code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        text = str(exc.orig)
        return "connection" in text.lower() or "deadlock" in text
    return False


def inbox_key(message: Message) -> str:
    """The inbox message id of a reply: its message id and attempt together."""
    return str(uuid.uuid5(INBOX_NAMESPACE, f"{message.message_id}/{message.attempt or 0}"))


async def claim_replies(conn: AsyncConnection, replies: Sequence[Message]) -> list[Message]:
    """Record the replies in the inbox (consumer "orchestrator") and return those never seen
    before, in order: one INSERT for the batch (`inbox.claim_many`)."""
    keys = [inbox_key(m) for m in replies]
    inserted = await claim_many(conn, INBOX_CONSUMER, keys)
    fresh: list[Message] = []
    for key, message in zip(keys, replies, strict=True):
        if key in inserted:
            inserted.discard(key)  # a second copy in the same batch is a duplicate
            fresh.append(message)
    return fresh


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A start command, checked: which saga it creates, for which request."""

    saga_id: str
    correlation_id: str
    message: Message

    @classmethod
    def parse(cls, message: Message) -> StartRequest:
        if not message.saga_type:
            raise InvalidMessage(f"start command {message.message_id} has no saga-type header")
        stored = (
            message.saga_type,
            message.saga_id,
            message.correlation_id,
            message.principal,
            message.reply_to,
            message.traceparent,
        )
        if any(value and "\x00" in value for value in stored):
            raise InvalidMessage(
                f"a header of start command {message.message_id} holds a NUL character"
            )
        correlation_id = message.correlation_id or message.saga_id or message.message_id
        if len(correlation_id) > MAX_CORRELATION_ID:
            raise InvalidMessage(
                f"correlation-id of start command {message.message_id} is longer than "
                f"{MAX_CORRELATION_ID} characters"
            )
        saga_id = message.saga_id or correlation_id
        if len(saga_id) > MAX_SAGA_ID:
            if message.saga_id:
                raise InvalidMessage(
                    f"saga-id of start command {message.message_id} is longer than {MAX_SAGA_ID}"
                )
            saga_id = str(uuid.uuid5(INBOX_NAMESPACE, correlation_id))
        return cls(saga_id, correlation_id, message)


def parse_reply(message: Message) -> Reply:
    if not message.saga_id or not message.saga_step:
        raise InvalidMessage(f"reply {message.message_id} lacks a saga-id or saga-step header")
    assert message.outcome is not None and message.causation_id is not None
    return Reply(
        step=message.saga_step,
        causation_id=message.causation_id,
        attempt=message.attempt or 1,
        outcome=message.outcome,
        payload=message.payload,
        now=time.time(),
    )


class OrchestratorService:
    """The orchestrator process minus its CLI: the consumer of starts and replies, the timer
    loop, and (optionally) the outbox relay of its own database.

        service = OrchestratorService(settings, registry, engine, transport)
        await service.start()     # returns once the consumer joined its group
        ...
        await service.stop()

    Several instances share the work through the consumer group `<prefix>orchestrator`.
    """

    def __init__(
        self,
        settings: Settings,
        registry: SagaRegistry,
        engine: AsyncEngine,
        transport: Transport,
        *,
        with_timers: bool = True,
        with_relay: bool = False,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.transport = transport
        self.topics = TopicNames(settings.topic_prefix)
        self.requests_topic = self.topics.requests(SERVICE)
        self.replies_topic = self.topics.replies(SERVICE)
        self.group_id = group_id or self.topics.named(SERVICE)
        self.with_timers = with_timers
        self.with_relay = with_relay
        self.processor = RecordProcessor(
            transport,
            settings,
            self.group_id,
            [self.requests_topic, self.replies_topic],
            self.handle_batch,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.timer_loop: Any = None
        self.relay: Any = None

    def topics_to_create(self) -> dict[str, int]:
        """Every topic the orchestrator reads or writes: its own, and each participant's
        requests topic named by a loaded saga."""
        names = {self.requests_topic, self.replies_topic}
        for definition in self.registry:
            for spec in definition.steps.values():
                for command in (spec.command, spec.compensation_command):
                    if command:
                        names.add(self.topics.requests(command.split(".", 1)[0]))
        return {name: self.settings.partitions for name in sorted(names)}

    async def start(self) -> None:
        """Create the topics, join the consumer group, start the timer loop (and relay)."""
        await self.transport.create_topics(self.topics_to_create())
        if self.with_relay:
            self._tasks.append(asyncio.create_task(self._run_relay(), name="orchestrator-relay"))
        if self.with_timers:
            from orchestrator.timers import TimerLoop

            self.timer_loop = TimerLoop(self.settings, self.registry, self.engine)
            self._tasks.append(
                asyncio.create_task(self.timer_loop.run(), name="orchestrator-timers")
            )
        await self.processor.start()
        self._tasks.append(asyncio.create_task(self._watch_assignment(), name="orchestrator-watch"))
        self._tasks.append(asyncio.create_task(self._prune_inbox(), name="orchestrator-inbox"))

    async def prune_inbox_once(self) -> int:
        """Forget reply ids handled longer than `inbox_retention_s` ago; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.inbox_retention_s)
        async with self.engine.begin() as conn:
            return await prune_inbox(conn, cutoff)

    async def _prune_inbox(self) -> None:
        interval = min(INBOX_PRUNE_INTERVAL_MAX_S, self.settings.inbox_retention_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                pruned = await self.prune_inbox_once()
                if pruned:
                    log.debug("pruned %d orchestrator inbox rows", pruned)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("orchestrator inbox pruning failed: %s", exc)

    async def _watch_assignment(self) -> None:
        """Log the partitions this instance owns whenever they change (who does what)."""
        seen: frozenset[tuple[str, int]] | None = None
        while True:
            subscription = self.processor.subscription
            current = subscription.assignment() if subscription is not None else frozenset()
            if current != seen:
                seen = current
                log.info(
                    "orchestrator %s owns partitions: %s",
                    self.group_id,
                    ", ".join(f"{t}[{p}]" for t, p in sorted(current)) or "none",
                )
            await asyncio.sleep(0.5)

    async def _run_relay(self) -> None:
        self.relay = make_relay(self.settings, SERVICE, self.engine, self.transport)
        await self.relay.run()

    async def stop(self) -> None:
        """Finish the batch in hand, leave the group, stop the timer loop and relay."""
        await self.processor.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        await self.processor.wait_assigned(timeout_s)

    async def handle_batch(self, batch: list[tuple[Record, Message]]) -> None:
        """One transaction for the whole batch (see the module docstring)."""
        items: list[StartRequest | Message] = []
        for record, message in batch:
            if record.topic == self.requests_topic:
                if message.message_type != "command" or message.command != START_COMMAND:
                    raise InvalidMessage(
                        f"{record.topic} takes only {START_COMMAND} commands, got "
                        f"{message.message_type} {message.command!r}"
                    )
                items.append(StartRequest.parse(message))
            elif record.topic == self.replies_topic:
                if message.message_type != "reply":
                    raise InvalidMessage(
                        f"{record.topic} takes only replies, got a {message.message_type}"
                    )
                parse_reply(message)  # reject a malformed reply before anything is written
                items.append(message)
            else:
                raise InvalidMessage(f"the orchestrator does not read topic {record.topic}")
        spans = self._open_spans(items) if tracing.enabled() else None
        with tracing.ending(spans.values() if spans is not None else ()):
            await self._transact(items, spans)

    def _open_spans(self, items: Sequence[StartRequest | Message]) -> dict[int, tracing.Span]:
        """A span per message (child of its traceparent), ended once the batch committed."""
        spans: dict[int, tracing.Span] = {}
        for item in items:
            if isinstance(item, StartRequest):
                message, topic = item.message, self.requests_topic
                name = f"orchestrator start {message.saga_type}"
            else:
                message, topic = item, self.replies_topic
                name = f"orchestrator reply {message.command or message.saga_step}"
            span = tracing.message_span(SERVICE, message, name, topic)
            if span is not None:
                spans[id(item)] = span
        return spans

    async def _transact(
        self,
        items: Sequence[StartRequest | Message],
        spans: dict[int, tracing.Span] | None,
    ) -> None:
        # A lost race or a database that is down is retried here, the batch kept whole: left
        # to the processor, it would be retried record by record and then dead-lettered.
        backoff = RetryDelay(0.05, self.settings.startup_retry_max_s)
        conflicts = 0
        while True:
            try:
                async with self.engine.begin() as conn:
                    await self.process(conn, items, spans)
                return
            except SagaConflict:
                conflicts += 1
                if conflicts > MAX_CONFLICT_RETRIES:
                    raise
                await asyncio.sleep(0.005 * conflicts)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning(
                    "the orchestrator database failed (%s: %s); retrying the batch in %.1fs",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    backoff.delay_s,
                )
                await backoff.wait()

    async def process(
        self,
        conn: AsyncConnection,
        items: Sequence[StartRequest | Message],
        spans: dict[int, tracing.Span] | None = None,
    ) -> None:
        """Apply starts and replies, in order, on `conn` (inside the caller's transaction).
        `spans` (tracing on): each item's span, the parent of the messages it causes."""
        session = SagaSession(conn, self.registry, self.topics)
        replies = [i for i in items if isinstance(i, Message)]
        fresh = {id(m) for m in await claim_replies(conn, replies)}
        starts = [i for i in items if isinstance(i, StartRequest)]
        taken = await self._existing_starts(conn, starts)
        await session.load(m.saga_id for m in replies if id(m) in fresh and m.saga_id)
        for item in items:
            span = spans.get(id(item)) if spans is not None else None
            session.trace_parent = tracing.traceparent_of(span) if span is not None else None
            token = logs.bind(item.message if isinstance(item, StartRequest) else item)
            try:
                self._process_one(session, item, taken, fresh)
            finally:
                logs.reset(token)
        session.trace_parent = None
        await session.flush()

    def _process_one(
        self,
        session: SagaSession,
        item: StartRequest | Message,
        taken: dict[str, set[str]],
        fresh: set[int],
    ) -> None:
        """Apply one start or reply to the session (the batch loop binds its log context)."""
        if isinstance(item, StartRequest):
            if item.correlation_id in taken["correlation"]:
                log.debug("start of %s redelivered; already started", item.correlation_id)
                return
            if item.saga_id in taken["id"]:
                raise InvalidMessage(
                    f"start command {item.message.message_id}: saga id {item.saga_id} is "
                    f"taken by another request than {item.correlation_id}"
                )
            taken["correlation"].add(item.correlation_id)
            taken["id"].add(item.saga_id)
            message = item.message
            assert message.saga_type is not None
            session.start(
                item.saga_id,
                item.correlation_id,
                message.saga_type,
                message.payload,
                reply_to=message.reply_to,
                reply_mode=message.reply_mode,
                principal=message.principal,
                origin={
                    "message_id": message.message_id,
                    # Timer-fired commands become children of the span that started it.
                    "traceparent": session.trace_parent or message.traceparent,
                },
            )
        elif id(item) in fresh:
            assert item.saga_id is not None
            if session.get(item.saga_id) is None:
                log.warning(
                    "reply %s is for saga %s, which does not exist; ignored",
                    item.message_id,
                    item.saga_id,
                )
                return
            session.apply(item.saga_id, parse_reply(item))

    @staticmethod
    async def _existing_starts(
        conn: AsyncConnection, starts: Sequence[StartRequest]
    ) -> dict[str, set[str]]:
        taken: dict[str, set[str]] = {"correlation": set(), "id": set()}
        if not starts:
            return taken
        correlation_ids = sorted({s.correlation_id for s in starts})
        saga_ids = sorted({s.saga_id for s in starts})
        # Two indexed lookups: an OR of both would scan the table on SQLite.
        for query, ids in (
            (_STARTS_BY_CORRELATION, correlation_ids),
            (_STARTS_BY_ID, saga_ids),
        ):
            for saga_id, correlation_id in await conn.execute(query, {"ids": ids}):
                taken["correlation"].add(correlation_id)
                taken["id"].add(saga_id)
        return taken
