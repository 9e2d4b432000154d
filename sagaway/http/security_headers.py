"""Security headers on every response: a Content-Security-Policy (a parameter, since an API and
an HTML console need different ones), no MIME sniffing, no referrer, no framing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# For JSON APIs: nothing may load, run or frame anything from a response.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class SecurityHeaders:
    """Adds the headers a response does not already carry, so a route that needs another value
    (a CSP with a per-request nonce, say) sets its own and keeps it.

    `csp` is the policy text, or a function of the ASGI scope returning it (a nonce kept in
    `scope["state"]`, for instance). `hsts_max_age_s` adds Strict-Transport-Security; give it
    only when every client reaches the service over TLS."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        csp: str | Callable[[Scope], str] = API_CSP,
        hsts_max_age_s: int | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.csp = csp
        fixed = [
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
        ]
        if hsts_max_age_s is not None:
            fixed.append(("Strict-Transport-Security", f"max-age={hsts_max_age_s}"))
        self.fixed = [*fixed, *extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                policy = self.csp(scope) if callable(self.csp) else self.csp
                for name, value in (("Content-Security-Policy", policy), *self.fixed):
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
