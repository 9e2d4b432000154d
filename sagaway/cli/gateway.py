"""`sagaway gateway`: serve the public gateway API (and /metrics on the internal listener)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import click
import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import SERVICE, create_gateway_app, create_internal_app
from gateway.models import callbacks, requests
from orchestrator.registry import SagaModuleError, SagaRegistry, load_registry
from sagaway.cli.database_errors import database_errors_as_click
from sagaway.http import SERVER_OPTIONS
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.observability.listeners import bind_listener, listener_port
from sagaway.outbox.choose import RelayModeError, make_relay, relay_mode
from sagaway.settings import GatewaySettings
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database

log = logging.getLogger("sagaway.gateway")


class _Server(uvicorn.Server):
    """Two servers share one process: signals are handled once, by `serve_gateway`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def check_migrated(engine: AsyncEngine) -> None:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.select(requests.c.id).limit(1))
            await conn.execute(sa.select(callbacks.c.id).limit(1))
    except sa.exc.DBAPIError as exc:
        raise click.ClickException(
            f"the gateway database lacks its tables ({type(exc.orig).__name__}): "
            "run `sagaway migrate --service gateway` first"
        ) from None


def bind_listeners(settings: GatewaySettings) -> tuple[socket.socket, socket.socket | None]:
    """The public listener's socket and the internal one's (None when gateway_internal_port is
    0), taken before anything else starts: a port in use stops the gateway with an error naming
    it and the setting to change, instead of a gateway that serves without /metrics."""
    public = bind_listener(
        settings.gateway_host,
        settings.gateway_port,
        "the gateway API",
        "--port or SAGAWAY_GATEWAY_PORT",
    )
    if not settings.gateway_internal_port:
        return public, None
    try:
        internal = bind_listener(
            settings.gateway_internal_host,
            settings.gateway_internal_port,
            "the gateway's /metrics",
            "--internal-port or SAGAWAY_GATEWAY_INTERNAL_PORT (0 = no /metrics)",
        )
    except BaseException:
        public.close()
        raise
    return public, internal


async def serve_gateway(settings: Settings) -> None:
    """Take the ports, connect (waiting for a database or broker that is down), then serve
    until signalled."""
    gateway_settings = settings.gateway
    try:
        registry = load_registry(settings.orchestrator.sagas or [])
    except SagaModuleError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(registry):
        log.warning("no saga modules are configured (SAGAWAY_SAGAS): every start answers 404")
    public, internal = bind_listeners(gateway_settings)
    sockets = [public] if internal is None else [public, internal]
    try:
        await _serve(settings, registry, public, internal)
    finally:
        for sock in sockets:
            sock.close()


async def _serve(
    settings: Settings,
    registry: SagaRegistry,
    public: socket.socket,
    internal: socket.socket | None,
) -> None:
    gateway_settings = settings.gateway
    engine = await connect_database(settings.storage, SERVICE)
    try:
        await check_migrated(engine)
        transport = await connect_transport(settings.messaging)
        try:
            relay = None
            if gateway_settings.gateway_run_relay:
                try:
                    mode = relay_mode(engine, gateway_settings.gateway_relay_mode)
                except RelayModeError as exc:
                    raise click.ClickException(f"gateway_relay_mode: {exc}") from None
                relay = make_relay(settings.relay, SERVICE, engine, transport, mode)
            app = create_gateway_app(
                gateway_settings, registry, engine, transport, relay=relay, manage_lifecycle=False
            )
            gateway = app.state.gateway
            await gateway.start()
            freeze_startup_heap()
            level = settings.observability.log_level.lower()

            def server(asgi_app: Any, host: str, sock: socket.socket) -> _Server:
                return _Server(
                    uvicorn.Config(
                        asgi_app,
                        host=host,
                        port=listener_port(sock),
                        lifespan="off",
                        log_level=level,
                        access_log=False,
                        log_config=None,  # our handler formats uvicorn's lines too
                        **SERVER_OPTIONS,  # X-Forwarded-For only through TrustedProxies
                    )
                )

            servers = [(server(app, gateway_settings.gateway_host, public), public)]
            if internal is not None:
                servers.append(
                    (
                        server(
                            create_internal_app(gateway),
                            gateway_settings.gateway_internal_host,
                            internal,
                        ),
                        internal,
                    )
                )
            loop = asyncio.get_running_loop()

            def stop() -> None:
                for each, _sock in servers:
                    each.should_exit = True

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            click.echo(
                f"gateway {gateway.instance_id} on http://{gateway_settings.gateway_host}:"
                f"{listener_port(public)}"
                + (
                    f" (metrics on http://{gateway_settings.gateway_internal_host}:"
                    f"{listener_port(internal)}/metrics)"
                    if internal is not None
                    else ""
                ),
                err=True,
            )
            try:
                await asyncio.gather(*(each.serve(sockets=[sock]) for each, sock in servers))
            except OSError as exc:  # another process took a port between bind and listen
                stop()
                raise click.ClickException(f"the gateway cannot listen: {exc}") from None
            finally:
                await gateway.stop()
        finally:
            await transport.close()
    finally:
        await engine.dispose()


@click.command("gateway")
@click.option("--host", default=None, help="Public listener address (default: gateway_host).")
@click.option("--port", type=int, default=None, help="Public listener port (gateway_port).")
@click.option(
    "--internal-port",
    type=int,
    default=None,
    help="Port of the /metrics listener, 0 = off (default: gateway_internal_port).",
)
@click.option("--instance-id", default=None, help="This instance's name (default: host-pid).")
@click.pass_obj
def gateway_command(
    settings: Settings,
    host: str | None,
    port: int | None,
    internal_port: int | None,
    instance_id: str | None,
) -> None:
    """Serve the HTTP API that starts sagas and answers with their results."""
    overrides = {
        "gateway_host": host,
        "gateway_port": port,
        "gateway_internal_port": internal_port,
        "gateway_instance_id": instance_id,
    }
    settings = settings.replace(
        **{name: value for name, value in overrides.items() if value is not None}
    )
    with contextlib.suppress(KeyboardInterrupt):
        database_errors_as_click(
            lambda: event_loop.run(serve_gateway(settings), settings.observability.event_loop)
        )
