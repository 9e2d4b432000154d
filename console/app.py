"""The operator console: a Starlette app of server-rendered pages (Jinja2), refreshed in place by
htmx, mountable anywhere (`sagaway dev` mounts it at /console; every link comes from url_for).
`create_console_app(settings, messaging=..., storage=...)` is the whole public surface: the routes,
session and lifespan."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route

from console.errors import EXCEPTION_HANDLERS
from console.input_guard import InputGuardMiddleware
from console.session_middleware import SessionUserMiddleware
from console.state import Console
from console.static_files import CachedStaticFiles
from console.views.actions import action_apply, action_confirm
from console.views.audit import audit
from console.views.bulk_actions import bulk_apply, bulk_confirm, bulk_result
from console.views.dead_letter_bulk import dead_letter_bulk_apply, dead_letter_bulk_confirm
from console.views.dead_letters import dead_letter_act, dead_letter_detail, dead_letter_list
from console.views.login import login, login_form, logout
from console.views.overview import overview, overview_panel
from console.views.saga_detail import saga_detail, saga_panel
from console.views.saga_types import saga_types
from console.views.sagas import saga_list
from console.views.sessions import lock_lift, session_revoke, sessions_page
from orchestrator.registry import SagaRegistry
from sagaway.http import HeaderLimits, SecurityHeaders, TrustedProxies
from sagaway.messaging.transport import Transport
from sagaway.settings import ConsoleSettings, MessagingSettings, StorageSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "sagaway_console"
# Only the console's own static script and stylesheet: no inline script, event handler or style
# attribute (htmx runs with includeIndicatorStyles and allowEval off — base.html's htmx-config;
# charts and timeline bars are SVG markup). htmx requests its panels from the same origin.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
EXTRA_HEADERS = (
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
)


@contextlib.asynccontextmanager
async def console_lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the console's sources and background tasks, and stop them. It is the app's own
    lifespan; a host that mounts the console (Starlette does not run a mounted app's lifespan)
    enters it from its own: `async with console_lifespan(console_app): yield`."""
    console: Console = app.state.console
    await console.start()
    try:
        yield
    finally:
        await console.stop()


def create_console_app(
    settings: ConsoleSettings,
    *,
    messaging: MessagingSettings,
    storage: StorageSettings,
    registry: SagaRegistry | None = None,
    transport: Transport | None = None,
    orchestrator_engine: AsyncEngine | None = None,
    background: bool = True,
) -> Starlette:
    """The console as a Starlette app, to serve alone (`sagaway console`) or mount (`/console`).

    `messaging` names the broker whose DLQs and consumer lag it reads; `storage` the services'
    databases (`storage.database_url_for(service)`, unless `settings.service_database_urls` names
    one). `registry` holds the sagas operators may act on (None: none, every action is refused);
    `transport` (a started one, owned by the caller) collects and replays dead letters — without
    it the app connects its own. `orchestrator_engine` shares a process's engine;
    `background=False` skips the lag sampler and the dead-letter collector (tests)."""
    console = Console(
        settings,
        messaging=messaging,
        storage=storage,
        registry=registry,
        transport=transport,
        orchestrator_engine=orchestrator_engine,
        background=background,
    )
    secret = (
        console.config.session_secret.get_secret_value()
        if console.config.session_secret
        else secrets.token_urlsafe(32)
    )
    if console.config.session_secret is None:
        log.warning("console.session_secret is not set: sessions end when the console restarts")

    routes = [
        Route("/", overview, name="overview"),
        Route("/overview/panel", overview_panel, name="overview_panel"),
        Route("/login", login_form, methods=["GET"], name="login_form"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/sagas", saga_list, name="saga_list"),
        Route("/sagas/bulk", bulk_confirm, methods=["GET"], name="bulk_confirm"),
        Route("/sagas/bulk", bulk_apply, methods=["POST"], name="bulk_apply"),
        Route("/bulk/{audit_id:int}", bulk_result, methods=["GET"], name="bulk_result"),
        Route("/audit", audit, methods=["GET"], name="audit"),
        Route("/sagas/{saga_id}", saga_detail, name="saga_detail"),
        Route("/sagas/{saga_id}/panel", saga_panel, name="saga_panel"),
        Route(
            "/sagas/{saga_id}/actions/{action}",
            action_confirm,
            methods=["GET"],
            name="action_confirm",
        ),
        Route(
            "/sagas/{saga_id}/actions/{action}",
            action_apply,
            methods=["POST"],
            name="action_apply",
        ),
        Route("/saga-types", saga_types, name="saga_types"),
        Route("/dead-letters", dead_letter_list, name="dead_letter_list"),
        Route(
            "/dead-letters/bulk",
            dead_letter_bulk_confirm,
            methods=["GET"],
            name="dead_letter_bulk_confirm",
        ),
        Route(
            "/dead-letters/bulk",
            dead_letter_bulk_apply,
            methods=["POST"],
            name="dead_letter_bulk_apply",
        ),
        Route("/dead-letters/{letter_id:int}", dead_letter_detail, name="dead_letter_detail"),
        Route(
            "/dead-letters/{letter_id:int}/{action}",
            dead_letter_act,
            methods=["POST"],
            name="dead_letter_act",
        ),
        Route("/sessions", sessions_page, methods=["GET"], name="sessions"),
        Route("/sessions/revoke", session_revoke, methods=["POST"], name="session_revoke"),
        Route("/login-locks/lift", lock_lift, methods=["POST"], name="lock_lift"),
        Mount("/static", CachedStaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            # Pages and static files compressed when the browser asks (htmx.min.js: 52 KB -> 16);
            # answers under ~500 B are not worth it.
            Middleware(GZipMiddleware, minimum_size=500, compresslevel=6),  # type: ignore[arg-type]
            # The client address (login throttling, the sessions page) from a configured proxy's
            # X-Forwarded-For only.
            Middleware(
                TrustedProxies,  # type: ignore[arg-type]
                trusted=console.config.trusted_proxies,
            ),
            Middleware(
                SecurityHeaders,  # type: ignore[arg-type]
                csp=CONSOLE_CSP,
                extra=EXTRA_HEADERS,
            ),
            Middleware(
                HeaderLimits,  # type: ignore[arg-type]
                max_bytes=console.config.max_header_bytes,
                max_count=console.config.max_headers,
            ),
            Middleware(InputGuardMiddleware),  # type: ignore[arg-type]
            # The cookie carries only the session id and the CSRF token; the session itself is
            # a console_sessions row (console/sessions.py).
            Middleware(
                SessionMiddleware,  # type: ignore[arg-type]
                secret_key=secret,
                session_cookie=SESSION_COOKIE,
                max_age=console.config.session_max_age_s,
                same_site="strict",
                https_only=console.config.cookie_secure,
            ),
            Middleware(SessionUserMiddleware, console=console),  # type: ignore[arg-type]
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=console_lifespan,
    )
    app.state.console = console
    app.state.users = console.users
    return app
