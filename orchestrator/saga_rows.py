"""The orchestrator's rows: the statements that read and write `saga_instances`, `saga_steps`,
`saga_search_keys` and `timers`, and the mapping between those rows and a `LoadedSaga`, the
engine's records and timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from orchestrator.dsl import SagaDefinition
from orchestrator.engine.effects import StepRecord, Timer
from orchestrator.engine.state import AWAITING, BACKOFF, SagaState
from orchestrator.models import saga_instances, saga_search_keys, saga_steps, timers
from orchestrator.registry import SagaRegistry, UnknownSagaType, UnknownSagaVersion

TimerKey = tuple[str, str, str, int]  # (timeout|backoff, step, forward|compensation, attempt)


def utc(ts: float) -> datetime:
    """A Unix timestamp as an aware UTC datetime, as the tables store times."""
    return datetime.fromtimestamp(ts, UTC)


def timer_key(timer: Timer) -> TimerKey:
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


def _partitions(stored: Any) -> dict[str, int]:
    """The stored partition stamps, skipping anything that is not topic → positive count."""
    if not isinstance(stored, dict):
        return {}
    return {
        str(topic): count
        for topic, count in stored.items()
        if isinstance(count, int) and not isinstance(count, bool) and count > 0
    }


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
    # The definition's search keys and their values in the input; stored with the new row.
    search_keys: dict[str, str] = field(default_factory=dict)
    # Topic → the partition count the saga's records to it are placed by, stamped when it first
    # sent there (sagaway/messaging/partition_counts.py); stored in the state column.
    partitions: dict[str, int] = field(default_factory=dict)
    # The status its row holds (None: not inserted yet). On SQLite an UPDATE that sets `status`
    # rewrites every index with that column even to the same value (saga_rows_sqlite.py).
    stored_status: str | None = None

    @property
    def new(self) -> bool:
        return self.version is None

    @classmethod
    def from_row(cls, row: Any, registry: SagaRegistry) -> LoadedSaga:
        """A saga as `LOAD_SAGAS` returns it; without a definition when its version is not
        loaded in `registry`."""
        state_json = row.state if isinstance(row.state, dict) else {}
        definition: SagaDefinition | None = None
        state: SagaState | None = None
        if "steps" in state_json:
            try:
                definition = registry.get(row.saga_type, row.definition_version)
            except (UnknownSagaType, UnknownSagaVersion):
                definition = None
            state = SagaState.from_json(state_json, data=row.data)
        return cls(
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
            partitions=_partitions(state_json.get("partitions")),
            stored_status=row.status,
        )

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
        if self.partitions:
            state_json["partitions"] = self.partitions
        return {
            "status": self.status,
            "current_step": current_step,
            "data": self.data,
            "state": state_json,
            "result": self.result,
            "failure": self.failure,
            "updated_at": now,
        }

    def insert_row(self, now: datetime) -> dict[str, Any]:
        """Every saga_instances column of a saga not stored yet (lock version 1)."""
        return {
            **self.row(now),
            "id": self.id,
            "saga_type": self.saga_type,
            "definition_version": self.definition_version,
            "correlation_id": self.correlation_id,
            "reply_to": self.reply_to,
            "reply_mode": self.reply_mode,
            "principal": self.principal,
            "created_at": self.created_at,
            "version": 1,
        }


def step_row(saga_id: str, record: StepRecord) -> dict[str, Any]:
    """The saga_steps row of one step record: a command sent, or a reply (or timeout) to one."""
    at = utc(record.at) if record.at else datetime.now(UTC)
    sent = record.status == "sent"
    return {
        "saga_id": saga_id,
        "step_name": record.step,
        "kind": record.kind,
        "status": record.status,
        "attempt": record.attempt,
        "command_message_id": record.message_id,
        "command": record.payload if sent else None,
        "sent_at": at if sent else None,
        "replied_at": None if sent else at,
        "reply_payload": None if sent else record.payload,
        "error": record.error,
    }


def timer_row(saga_id: str, timer: Timer, now: datetime) -> dict[str, Any]:
    """The timers row of a timer the engine set."""
    return {
        "saga_id": saga_id,
        "kind": timer.kind,
        "step": timer.step,
        "attempt": timer.attempt,
        "due_at": utc(timer.due),
        "payload": {"step_kind": timer.step_kind},
        "created_at": now,
    }


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def postgres_update_params(sagas: Sequence[LoadedSaga], now: datetime) -> dict[str, Any]:
    """The parameters of `POSTGRES_UPDATE` for these sagas: one array per column."""
    rows = [s.row(now) for s in sagas]
    return {
        "now": now,
        "ids": [s.id for s in sagas],
        "versions": [s.version for s in sagas],
        "statuses": [r["status"] for r in rows],
        "steps": [r["current_step"] for r in rows],
        "datas": [_json_text(r["data"]) for r in rows],
        "states": [_json_text(r["state"]) for r in rows],
        "results": [_json_text(r["result"]) for r in rows],
        "failures": [_json_text(r["failure"]) for r in rows],
    }


def sqlite_update_params(sagas: Sequence[LoadedSaga], now: datetime) -> list[dict[str, Any]]:
    """The parameters of `SQLITE_UPDATE` for these sagas: one set per saga."""
    return [{**s.row(now), "b_id": s.id, "b_version": s.version} for s in sagas]


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

SQLITE_UPDATE = (
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
POSTGRES_UPDATE = sa.text(
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
LOAD_SAGAS = (
    sa.select(*_SAGA_COLUMNS)
    .where(saga_instances.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(saga_instances.c.id)
)
LOAD_SAGAS_LOCKED = {skip: LOAD_SAGAS.with_for_update(skip_locked=skip) for skip in (False, True)}
LOAD_TIMERS = sa.select(
    timers.c.id, timers.c.saga_id, timers.c.kind, timers.c.step, timers.c.attempt,
    timers.c.payload,
).where(timers.c.saga_id.in_(sa.bindparam("ids", expanding=True)))  # fmt: skip
INSERT_SAGAS = saga_instances.insert()
INSERT_STEPS = saga_steps.insert()
INSERT_SEARCH_KEYS = saga_search_keys.insert()
INSERT_TIMERS = timers.insert()
DELETE_TIMERS = sa.delete(timers).where(timers.c.id.in_(sa.bindparam("ids", expanding=True)))
POSTPONE_TIMERS = (
    sa.update(timers)
    .where(timers.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(due_at=sa.bindparam("new_due_at", type_=timers.c.due_at.type))
)
STARTS_BY_CORRELATION = sa.select(saga_instances.c.id, saga_instances.c.correlation_id).where(
    saga_instances.c.correlation_id.in_(sa.bindparam("ids", expanding=True))
)
STARTS_BY_ID = sa.select(saga_instances.c.id, saga_instances.c.correlation_id).where(
    saga_instances.c.id.in_(sa.bindparam("ids", expanding=True))
)
