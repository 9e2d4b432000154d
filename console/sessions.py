"""Server-side console sessions: the cookie carries a random id, the `console_sessions` table
decides whether it is still a login (not expired, not revoked, and made under the user's
current password hash), so logging out, an operator's revocation or a password change ends it
everywhere, a copied cookie included."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from console.models import console_sessions

# last_seen_at is written at most this often per session, not on every htmx refresh.
TOUCH_EVERY = timedelta(seconds=60)
MAX_USER_AGENT = 300
MAX_ADDRESS = 100


def id_hash(session_id: str) -> str:
    """What the table keeps of a session id: its SHA-256 (hex)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def credential_of(password_hash: str) -> str:
    """A digest of a password hash: a session is valid only while its user's hash is unchanged."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredSession:
    handle: str  # the id's hash: names the session on the admin page, cannot be replayed
    user_name: str
    credential: str
    expires_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    # Shown on the Sessions page: control characters (and NUL, which PostgreSQL refuses) go.
    return "".join(ch if ch.isprintable() else "?" for ch in value[:limit])


class SessionStore:
    """The console_sessions table, through the console's orchestrator-database engine."""

    def __init__(self, engine: AsyncEngine, max_age: timedelta) -> None:
        self.engine = engine
        self.max_age = max_age

    async def create(
        self, user_name: str, credential: str, address: str | None, user_agent: str | None
    ) -> str:
        """A new session for this user; returns the id the cookie carries (never stored)."""
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(
                console_sessions.insert().values(
                    id_hash=id_hash(session_id),
                    user_name=user_name,
                    credential=credential,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.max_age,
                    address=_clip(address, MAX_ADDRESS),
                    user_agent=_clip(user_agent, MAX_USER_AGENT),
                )
            )
            # Expired rows are no use to anyone; dropping them here keeps the table small.
            await conn.execute(
                console_sessions.delete().where(
                    console_sessions.c.expires_at < now - timedelta(days=1)
                )
            )
        return session_id

    async def find(self, session_id: str) -> StoredSession | None:
        t = console_sessions.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        t.id_hash,
                        t.user_name,
                        t.credential,
                        t.expires_at,
                        t.revoked_at,
                        t.last_seen_at,
                    ).where(t.id_hash == id_hash(session_id))
                )
            ).first()
        if row is None:
            return None
        return StoredSession(*row)

    async def touch(self, session: StoredSession) -> None:
        """Note that the session was used, at most once per TOUCH_EVERY."""
        now = datetime.now(UTC)
        if now - session.last_seen_at < TOUCH_EVERY:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                console_sessions.update()
                .where(console_sessions.c.id_hash == session.handle)
                .values(last_seen_at=now)
            )

    async def revoke(self, handle: str, by: str) -> dict[str, Any] | None:
        """End one session (by its handle); returns the row it ended, None if none was live."""
        t = console_sessions.c
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            row = (
                (await conn.execute(sa.select(console_sessions).where(t.id_hash == handle)))
                .mappings()
                .first()
            )
            if row is None or row["revoked_at"] is not None:
                return None
            await conn.execute(
                console_sessions.update()
                .where(t.id_hash == handle, t.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=by)
            )
        return dict(row)

    async def revoke_id(self, session_id: str, by: str) -> None:
        await self.revoke(id_hash(session_id), by)

    async def active(self, limit: int = 500) -> list[dict[str, Any]]:
        """Live sessions, most recently used first (the admin page)."""
        t = console_sessions.c
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    t.id_hash,
                    t.user_name,
                    t.created_at,
                    t.last_seen_at,
                    t.expires_at,
                    t.address,
                    t.user_agent,
                )
                .where(t.revoked_at.is_(None), t.expires_at > now)
                .order_by(t.last_seen_at.desc())
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]
