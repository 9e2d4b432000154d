"""The HTTP listeners of `sagaway dev`: the public one, bound before anything else, and the app
it serves (the console at /console, the gateway everywhere else); and the internal one serving
/metrics (docs/security.md: metrics say a lot about traffic, so they are not public)."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from gateway.problems import handle_http_exception
from sagaway.dev import DevError
from sagaway.http import API_CSP, SERVER_OPTIONS, SecurityHeaders
from sagaway.settings import GatewaySettings

CONSOLE_PATH = "/console"


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind the HTTP port first of all, so a taken port is reported before any work is done."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        hint = " (another `sagaway dev`? choose another with --port)" if in_use else ""
        raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.setblocking(False)
    return sock


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


class DevServer(uvicorn.Server):
    """Signals are `run_dev`'s: uvicorn's own handlers would re-raise SIGINT after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def dev_server(app: Starlette, *, log_level: str, grace_s: int) -> DevServer:
    """The server for `app`; quiet at INFO (`sagaway dev` logs what matters itself). Forwarded
    headers are left to the apps' own TrustedProxies (sagaway.http)."""
    level = log_level.upper()
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning" if level in ("INFO", "WARNING") else level.lower(),
        access_log=False,
        log_config=None,  # our handler formats uvicorn's lines too
        timeout_graceful_shutdown=grace_s,
        **SERVER_OPTIONS,
    )
    return DevServer(config)


DEFAULT_INTERNAL_PORT: int = GatewaySettings.model_fields["gateway_internal_port"].default


def internal_port(settings: GatewaySettings, public_port: int) -> int | None:
    """Where /metrics is served: nowhere with gateway_internal_port 0, that port when it is set
    to another than its default, else the port after the public one (8001 beside the default
    8000; any free one beside port 0)."""
    if settings.gateway_internal_port == 0:
        return None
    if settings.gateway_internal_port != DEFAULT_INTERNAL_PORT:
        return settings.gateway_internal_port
    return public_port + 1 if 0 < public_port < 65535 else 0


def bind_internal_listener(settings: GatewaySettings, public_port: int) -> socket.socket | None:
    """The internal listener's socket, or None when /metrics is not served. The port after the
    public one gives way to a free one when taken; a port set in the settings must be free."""
    port = internal_port(settings, public_port)
    if port is None:
        return None
    host = settings.gateway_internal_host
    try:
        return bind_listener(host, port)
    except DevError:
        if settings.gateway_internal_port != DEFAULT_INTERNAL_PORT or port == 0:
            raise
        return bind_listener(host, 0)


def compose_app(gateway_app: Starlette, console_app: Starlette) -> Starlette:
    """The gateway and the console behind one listener (the gateway serves /metrics there too
    only with gateway_public_metrics)."""

    async def to_console(request: Request) -> Response:
        return RedirectResponse(f"{CONSOLE_PATH}/", status_code=307)

    return Starlette(
        routes=[
            Route("/", to_console, methods=["GET"]),
            Route(CONSOLE_PATH, to_console, methods=["GET"]),
            Mount(CONSOLE_PATH, app=console_app),
            Mount("", app=gateway_app),
        ],
        # A path no mount matches (Mount's pattern stops at a newline, say) is answered
        # like the gateway answers it: a problem+json 404, not Starlette's text/plain.
        exception_handlers={HTTPException: handle_http_exception},
    )


def metrics_app(gateway_metrics: Callable[[], bytes]) -> Starlette:
    """The internal listener's app: one /metrics for the process."""

    async def metrics(request: Request) -> Response:
        # The gateway's own registry, then the process-wide one (orchestrator, relays).
        body = gateway_metrics() + generate_latest(REGISTRY)
        return Response(body, media_type="text/plain; version=0.0.4")

    app = Starlette(
        routes=[Route("/metrics", metrics, methods=["GET"])],
        exception_handlers={HTTPException: handle_http_exception},
    )
    app.add_middleware(SecurityHeaders, csp=API_CSP)
    return app
