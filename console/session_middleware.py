"""Resolves the login a request carries, once, before any handler runs: the cookie session's id
is looked up in console_sessions and the user (or None) is put on the scope, where
console.auth.current_user finds it. Sits inside Starlette's SessionMiddleware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from console.auth import SCOPE_USER, SESSION_ID, SessionUser

if TYPE_CHECKING:
    from console.state import Console


class SessionUserMiddleware:
    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SCOPE_USER] = await self._user(scope)
        await self.app(scope, receive, send)

    async def _user(self, scope: Scope) -> SessionUser | None:
        cookie_session = scope.get("session")
        session_id = cookie_session.get(SESSION_ID) if isinstance(cookie_session, dict) else None
        store = self.console.session_store
        if not isinstance(session_id, str) or store is None:
            return None
        stored = await store.find(session_id)
        if stored is None or stored.revoked_at is not None:
            return None
        if stored.expires_at <= datetime.now(UTC):
            return None
        user = self.console.users.still_valid(stored.user_name, stored.credential, stored.handle)
        if user is not None:
            await store.touch(stored)
        return user
