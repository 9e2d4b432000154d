"""Refuses, before routing, a console address no page could mean: a path or query parameter
holding a control character (NUL above all: PostgreSQL cannot compare text holding it, SQLite
can, and the console must answer both alike), or an oversized query string."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from console.inputs import has_control_character

MAX_QUERY_BYTES = 8192


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, message = refusal
                await PlainTextResponse(message, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _refusal(scope: Scope) -> tuple[int, str] | None:
        query: bytes = scope.get("query_string", b"")
        if len(query) > MAX_QUERY_BYTES:
            return 414, f"The query string is longer than {MAX_QUERY_BYTES} bytes."
        if has_control_character(scope.get("path", "")):
            return 400, "The address holds a control character."
        text = query.decode("utf-8", "replace")
        for key, value in parse_qsl(text, keep_blank_values=True):
            if has_control_character(key) or has_control_character(value):
                return 400, "A query parameter holds a control character."
        return None
