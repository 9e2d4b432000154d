"""Login throttling: failed logins are counted per user name and per client address in the
`console_login_locks` table; past a limit the name or address is locked out for a while that
doubles with each lockout. A locked attempt is refused before any password is hashed, so a
flood of guesses costs one indexed read each and the right password is refused too until the
lock ends or an operator lifts it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from console.models import login_locks
from sagaway.settings import ConsoleSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

USER, ADDRESS = "user", "address"
SCOPES = (USER, ADDRESS)
MAX_SUBJECT = 200
# Rows with no failure for this long are dropped (their lockout count with them).
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Lockout:
    """Why a login is refused before its password is checked."""

    scope: str
    until: datetime

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.until - now).total_seconds() + 0.999))

    def message(self, now: datetime) -> str:
        who = "this user" if self.scope == USER else "your address"
        return (
            f"Too many failed logins: {who} is locked for {self.seconds_left(now)} more seconds "
            f"(until {self.until:%H:%M:%S} UTC). An operator can lift the lock on the "
            "Sessions page."
        )


class LoginThrottle:
    """Counts failures, locks out, and lifts locks. `clock` is injectable for tests of the
    doubling; everything else is the real table."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: ConsoleSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._limits = {USER: config.login_max_failures, ADDRESS: config.login_address_max_failures}

    def _subjects(self, name: str, address: str) -> list[tuple[str, str]]:
        return [(USER, name[:MAX_SUBJECT]), (ADDRESS, address[:MAX_SUBJECT])]

    async def lockout(self, name: str, address: str) -> Lockout | None:
        """The lock that refuses this attempt, if any (the longest of user and address)."""
        now = self.clock()
        t = login_locks.c
        clauses = [
            sa.and_(t.scope == scope, t.subject == subject)
            for scope, subject in self._subjects(name, address)
        ]
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.scope, t.locked_until).where(sa.or_(*clauses), t.locked_until > now)
                )
            ).all()
        if not rows:
            return None
        scope, until = max(rows, key=lambda row: row[1])
        return Lockout(scope, until)

    def _lock_length(self, lockouts: int) -> timedelta:
        seconds = self.config.login_lockout_s * 2 ** min(max(lockouts - 1, 0), 30)
        return timedelta(seconds=min(seconds, self.config.login_lockout_max_s))

    async def _count(self, conn: AsyncConnection, scope: str, subject: str, now: datetime) -> None:
        t = login_locks.c
        forgotten = now - timedelta(seconds=self.config.login_failure_window_s)
        match = sa.and_(t.scope == scope, t.subject == subject)
        # Insert-or-ignore, then count: one statement pair that concurrent failures cannot race.
        insert = (postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert)(
            login_locks
        ).values(
            scope=scope,
            subject=subject,
            failures=0,
            lockouts=0,
            locked_until=None,
            last_failure_at=now,
        )
        await conn.execute(insert.on_conflict_do_nothing())
        await conn.execute(
            login_locks.update()
            .where(match)
            .values(
                failures=sa.case((t.last_failure_at < forgotten, 1), else_=t.failures + 1),
                last_failure_at=now,
            )
        )
        row = (await conn.execute(sa.select(t.failures, t.lockouts).where(match))).one()
        if row.failures >= self._limits[scope]:
            lockouts = row.lockouts + 1
            until = now + self._lock_length(lockouts)
            await conn.execute(
                login_locks.update()
                .where(match)
                .values(failures=0, lockouts=lockouts, locked_until=until)
            )
            log.warning(
                "console: %s %r locked out until %s after %d failed logins",
                scope,
                subject,
                until.isoformat(),
                row.failures,
            )

    async def failed(self, name: str, address: str) -> None:
        """Count a wrong password against the name and the address (locking either at its
        limit)."""
        now = self.clock()
        async with self.engine.begin() as conn:
            for scope, subject in self._subjects(name, address):
                await self._count(conn, scope, subject, now)
            await conn.execute(
                login_locks.delete().where(
                    login_locks.c.last_failure_at < now - FORGET_AFTER,
                    sa.or_(login_locks.c.locked_until.is_(None), login_locks.c.locked_until < now),
                )
            )

    async def succeeded(self, name: str) -> None:
        """A right password: the name's failures and lockout history are forgotten (the
        address's are not, or one valid account would reset the guesses made at others)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                login_locks.delete().where(
                    login_locks.c.scope == USER, login_locks.c.subject == name[:MAX_SUBJECT]
                )
            )

    async def lift(self, scope: str, subject: str) -> bool:
        """An operator ends a lock (and its history); True if there was one."""
        async with self.engine.begin() as conn:
            deleted = await conn.execute(
                login_locks.delete().where(
                    login_locks.c.scope == scope, login_locks.c.subject == subject
                )
            )
        return bool(deleted.rowcount)

    async def current(self, limit: int = 500) -> list[dict[str, Any]]:
        """Locks in force and recent failures (the admin page), locked ones first."""
        t = login_locks.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(login_locks)
                .order_by(t.locked_until.desc().nulls_last(), t.last_failure_at.desc())
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]


class VerifierBusy(Exception):
    """More logins are waiting for a password check than the console lets queue."""


class PasswordChecks:
    """Slots for slow password hashes: at most `concurrency` run at once (each off the event
    loop, in a thread), at most `queue` more wait; the rest are refused at once rather than
    piling up."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._limit = concurrency + queue
        self._pending = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._pending >= self._limit:
            raise VerifierBusy()
        self._pending += 1
        try:
            async with self._slots:
                yield
        finally:
            self._pending -= 1

    @staticmethod
    async def verify(check: Callable[[], T]) -> T:
        """Run the hash check in a thread (call it holding a slot)."""
        return await asyncio.to_thread(check)
