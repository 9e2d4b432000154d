"""Limits on a request's header fields: their total size and their number, answered 431
(RFC 6585) with a problem+json body before the application sees the request."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PROBLEM_TYPE = "https://sagaway.dev/problems/request-header-fields-too-large"


class HeaderLimits:
    """431 when the header fields of a request exceed `max_bytes` in total (names and values)
    or number more than `max_count`.

    The HTTP server has read the header by then: uvicorn's httptools parser sets no limit of
    its own, so a reverse proxy in front should cap it too (docs/security.md)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = 16_384, max_count: int = 100) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            detail = self.exceeded(scope["headers"])
            if detail:
                await too_large(send, detail)
                return
        await self.app(scope, receive, send)

    def exceeded(self, headers: list[tuple[bytes, bytes]]) -> str:
        """Why `headers` are refused, or "" when they are within the limits."""
        if len(headers) > self.max_count:
            return f"the request has {len(headers)} header fields; the limit is {self.max_count}"
        size = sum(len(name) + len(value) for name, value in headers)
        if size > self.max_bytes:
            return f"the header fields take {size} bytes; the limit is {self.max_bytes}"
        return ""


async def too_large(send: Send, detail: str) -> None:
    body = orjson.dumps(
        {
            "type": PROBLEM_TYPE,
            "title": "Request header fields too large",
            "status": 431,
            "detail": detail,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
