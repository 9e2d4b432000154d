"""The gateway's `requests` table: accept a request (row + start command in ONE transaction),
look requests up, and store final results (with their callback delivery) exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import store_sqlite
from gateway.group_commit import GroupCommit
from gateway.models import callbacks, requests
from gateway.problems import DatabaseUnavailable
from gateway.request_state import RequestState
from sagaway.messaging.envelope import Message
from sagaway.observability.backoff import RetryDelay
from sagaway.outbox.writer import add_to_outbox
from sagaway.sqlite.direct import holding_inline_transaction
from sagaway.storage.database import read_only

log = logging.getLogger("sagaway.gateway.store")

# Errors that mean "the database is not reachable now" rather than "this statement is wrong".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)
IN_LIST_CHUNK = 500
MAX_BACKOFF_S = 5.0
T = TypeVar("T")


async def while_unavailable(what: str, action: Callable[[], Awaitable[T]]) -> T:
    """Run `action` until the database answers: a consumer must wait out an outage rather than
    dead-letter the records it could not store (cancelling it leaves them uncommitted)."""
    backoff = RetryDelay(0.1, MAX_BACKOFF_S)
    while True:
        try:
            return await action()
        except UNAVAILABLE_ERRORS as exc:
            log.warning(
                "%s: the gateway database is unavailable (%s); retrying in %.1fs",
                what,
                exc,
                backoff.delay_s,
            )
            await backoff.wait()


_COLUMNS = (
    requests.c.id,
    requests.c.saga_type,
    requests.c.route,
    requests.c.mode,
    requests.c.status,
    requests.c.principal,
    requests.c.body_hash,
    requests.c.callback_url,
    requests.c.result,
    requests.c.error,
    requests.c.received_at,
    requests.c.completed_at,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request to store: its `requests` row and its start command (topic, message)."""

    values: dict[str, Any]
    start: tuple[str, Message]


@dataclass(frozen=True, slots=True)
class FinalResult:
    """What a final reply says about a request (docs/messages.md)."""

    request_id: str
    status: str
    result: Any
    failure: Any
    # The final reply's trace (its span's, with tracing on): a callback delivery continues it.
    traceparent: str | None = None


# Built once, run with parameters: a statement built per reply (and its cache key) cost
# SQLAlchemy more than the UPDATE itself.
_STORE_RESULT = (
    sa.update(requests)
    .where(requests.c.id == sa.bindparam("b_id"), requests.c.status == "accepted")
    .values(
        status=sa.bindparam("b_status"),
        result=sa.bindparam("b_result", type_=requests.c.result.type),
        error=sa.bindparam("b_error", type_=requests.c.error.type),
        completed_at=sa.bindparam("b_now", type_=requests.c.completed_at.type),
    )
)
# The rows a batch of results will change, locked on PostgreSQL until the commit (another
# instance storing the same result waits, then finds it no longer accepted); SQLite holds the
# write lock from BEGIN IMMEDIATE.
_STILL_ACCEPTED = (
    sa.select(*_COLUMNS)
    .where(requests.c.id.in_(sa.bindparam("ids", expanding=True)), requests.c.status == "accepted")
    .with_for_update()
)


_INSERT_REQUEST = requests.insert()
_INSERT_CALLBACK = callbacks.insert()
_TERMINAL_AMONG = sa.select(*_COLUMNS).where(
    requests.c.id.in_(sa.bindparam("ids", expanding=True)), requests.c.status != "accepted"
)


class RequestStore:
    """SQL on the gateway database; database outages surface as DatabaseUnavailable (503)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._accepts: GroupCommit[Accepted] = GroupCommit(
            self._insert_accepted, shared_errors=(DatabaseUnavailable,)
        )

    async def accept(self, values: dict[str, Any], start: tuple[str, Message]) -> None:
        """Insert the request row and its start command into the outbox in one transaction
        (shared with the requests accepted at the same moment: a group commit).
        Raises sa.exc.IntegrityError when the idempotency key is taken (the caller replays)."""
        await self._accepts.submit(Accepted(values, start))

    async def _insert_accepted(self, batch: Sequence[Accepted]) -> None:
        try:
            async with self.engine.begin() as conn:
                rows = [item.values for item in batch]
                sqlite = holding_inline_transaction(conn)
                if sqlite is not None and all(r.keys() == store_sqlite.REQUEST_KEYS for r in rows):
                    store_sqlite.insert_requests(sqlite, rows)
                else:
                    await conn.execute(_INSERT_REQUEST, rows)
                await add_to_outbox(conn, [item.start for item in batch])
        except sa.exc.IntegrityError:
            raise
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable(f"the gateway database is unavailable: {exc!r:.200}") from exc

    async def get(self, request_id: str) -> RequestState | None:
        return await self._one(requests.c.id == request_id)

    async def by_idempotency_key(self, scoped_key: str) -> RequestState | None:
        return await self._one(requests.c.idempotency_key == scoped_key)

    async def _one(self, condition: Any) -> RequestState | None:
        try:
            async with read_only(self.engine) as conn:
                row = (await conn.execute(sa.select(*_COLUMNS).where(condition))).first()
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable(f"the gateway database is unavailable: {exc!r:.200}") from exc
        return RequestState.from_row(row) if row is not None else None

    async def terminal_among(self, ids: Sequence[str]) -> list[RequestState]:
        """The requests among `ids` that have a final result (the pending poller's question)."""
        found: list[RequestState] = []
        async with read_only(self.engine) as conn:
            for start in range(0, len(ids), IN_LIST_CHUNK):
                chunk = list(ids[start : start + IN_LIST_CHUNK])
                rows = await conn.execute(_TERMINAL_AMONG, {"ids": chunk})
                found.extend(RequestState.from_row(row) for row in rows)
        return found

    async def store_results(
        self, results: Sequence[FinalResult], callback_body: Any
    ) -> list[RequestState]:
        """Record final results in one transaction; a request already terminal is left as it
        is (a duplicate reply changes nothing). For each newly terminal request with a callback
        URL, a callback delivery row is written in the same transaction. Returns the requests
        that became terminal now."""
        now = datetime.now(UTC)
        stored: list[RequestState] = []
        async with self.engine.begin() as conn:
            # Two statements for the batch, not one round trip per result: read which requests
            # are still waiting, then update those in one executemany. On inline SQLite both run
            # on its sqlite3 connection (store_sqlite.py).
            sqlite = holding_inline_transaction(conn)
            waiting: dict[str, RequestState] = {}
            ids = list(dict.fromkeys(item.request_id for item in results))
            for start in range(0, len(ids), IN_LIST_CHUNK):
                chunk = ids[start : start + IN_LIST_CHUNK]
                if sqlite is not None:
                    states = store_sqlite.still_accepted(sqlite, chunk)
                else:
                    rows = await conn.execute(_STILL_ACCEPTED, {"ids": chunk})
                    states = [RequestState.from_row(row) for row in rows]
                for state in states:
                    waiting[state.id] = state
            changes: list[FinalResult] = []
            for item in results:
                found = waiting.pop(item.request_id, None)
                if found is None:
                    continue  # already terminal (a duplicate reply), or not ours
                changes.append(item)
                stored.append(
                    replace(
                        found,
                        status=item.status,
                        result=item.result,
                        error=item.failure,
                        completed_at=now,
                    )
                )
            if changes and sqlite is not None:
                store_sqlite.store_results(
                    sqlite,
                    [(item.request_id, item.status, item.result, item.failure) for item in changes],
                    now,
                )
            elif changes:
                await conn.execute(
                    _STORE_RESULT,
                    [
                        {
                            "b_id": item.request_id,
                            "b_status": item.status,
                            "b_result": item.result,
                            "b_error": item.failure,
                            "b_now": now,
                        }
                        for item in changes
                    ],
                )
            traces = {item.request_id: item.traceparent for item in results}
            for state in stored:
                if state.callback_url:
                    body = callback_body(state)
                    await _add_callback(conn, state, body, now, traces.get(state.id))
        return stored

    async def forget_idempotency_keys(self, older_than: datetime) -> int:
        """Free the keys of requests received before `older_than` (retention ran out); the
        requests themselves stay readable by id."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(requests)
                .where(
                    requests.c.idempotency_key.is_not(None),
                    requests.c.received_at < older_than,
                )
                .values(idempotency_key=None)
            )
        return int(result.rowcount or 0)

    async def count_accepted(self) -> int:
        async with read_only(self.engine) as conn:
            return int(
                await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(requests)
                    .where(requests.c.status == "accepted")
                )
                or 0
            )


async def _add_callback(
    conn: AsyncConnection, state: RequestState, body: Any, now: datetime, traceparent: str | None
) -> None:
    await conn.execute(
        _INSERT_CALLBACK,
        {
            "request_id": state.id,
            "url": state.callback_url,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "traceparent": traceparent,
        },
    )
