"""The gateway's part of a trace: a server span per HTTP request, continuing the caller's W3C
`traceparent` header; the start command it sends is that span's child. A pass-through when
tracing is off."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagaway.observability import tracing


class TracingMiddleware:
    """Opens the request's server span (named `METHOD /route/template` once routed) and makes it
    the current span while the request is handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        incoming = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                incoming = value.decode("latin-1").strip()
                break
        span = tracing.server_span(
            f"{method} {scope['path']}",
            incoming,
            {
                "sagaway.service": "gateway",
                "http.request.method": method,
                "url.path": scope["path"],
            },
        )
        assert span is not None
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            with tracing.use_span(span):
                await self.app(scope, receive, send_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if error is None and status >= 500:
                error = RuntimeError(f"HTTP {status}")
            tracing.end_span(span, error)
