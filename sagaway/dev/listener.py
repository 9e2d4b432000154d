"""The one HTTP listener of `sagaway dev`: its port, bound before anything else, and the app it
serves (the console at /console, /metrics, the gateway everywhere else)."""

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
    """The server for `app`; quiet at INFO (`sagaway dev` logs what matters itself)."""
    level = log_level.upper()
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning" if level in ("INFO", "WARNING") else level.lower(),
        access_log=False,
        log_config=None,  # our handler formats uvicorn's lines too
        timeout_graceful_shutdown=grace_s,
    )
    return DevServer(config)


def compose_app(
    gateway_app: Starlette, console_app: Starlette, gateway_metrics: Callable[[], bytes]
) -> Starlette:
    """The gateway and the console behind one listener, with one /metrics for the process."""

    async def metrics(request: Request) -> Response:
        # The gateway's own registry, then the process-wide one (orchestrator, relays).
        body = gateway_metrics() + generate_latest(REGISTRY)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def to_console(request: Request) -> Response:
        return RedirectResponse(f"{CONSOLE_PATH}/", status_code=307)

    return Starlette(
        routes=[
            Route("/", to_console, methods=["GET"]),
            Route(CONSOLE_PATH, to_console, methods=["GET"]),
            Mount(CONSOLE_PATH, app=console_app),
            Route("/metrics", metrics, methods=["GET"]),
            Mount("", app=gateway_app),
        ],
        # A path no mount matches (Mount's pattern stops at a newline, say) is answered
        # like the gateway answers it: a problem+json 404, not Starlette's text/plain.
        exception_handlers={HTTPException: handle_http_exception},
    )
