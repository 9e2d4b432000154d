"""`sagaway gateway`: serve the public gateway API (and /metrics on the internal listener)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import click
import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import SERVICE, create_gateway_app, create_internal_app
from gateway.models import callbacks, requests
from orchestrator.registry import SagaModuleError, load_registry
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.outbox.choose import RelayModeError, make_relay, relay_mode
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


async def serve_gateway(settings: Settings) -> None:
    """Connect (waiting for a database or broker that is down), then serve until signalled."""
    gateway_settings = settings.gateway
    try:
        registry = load_registry(settings.orchestrator.sagas or [])
    except SagaModuleError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(registry):
        log.warning("no saga modules are configured (SAGAWAY_SAGAS): every start answers 404")
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
            level = settings.observability.log_level.lower()
            servers = [
                _Server(
                    uvicorn.Config(
                        app,
                        host=gateway_settings.gateway_host,
                        port=gateway_settings.gateway_port,
                        lifespan="off",
                        log_level=level,
                        access_log=False,
                        log_config=None,  # our handler formats uvicorn's lines too
                    )
                )
            ]
            if gateway_settings.gateway_internal_port:
                servers.append(
                    _Server(
                        uvicorn.Config(
                            create_internal_app(gateway),
                            host=gateway_settings.gateway_internal_host,
                            port=gateway_settings.gateway_internal_port,
                            lifespan="off",
                            log_level=level,
                            access_log=False,
                            log_config=None,  # our handler formats uvicorn's lines too
                        )
                    )
                )
            loop = asyncio.get_running_loop()

            def stop() -> None:
                for server in servers:
                    server.should_exit = True

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            click.echo(
                f"gateway {gateway.instance_id} on http://{gateway_settings.gateway_host}:"
                f"{gateway_settings.gateway_port}"
                + (
                    f" (metrics on http://{gateway_settings.gateway_internal_host}:"
                    f"{gateway_settings.gateway_internal_port}/metrics)"
                    if gateway_settings.gateway_internal_port
                    else ""
                ),
                err=True,
            )

            async def serve_internal(server: uvicorn.Server) -> None:
                try:
                    await server.serve()
                except SystemExit:  # uvicorn exits when it cannot bind
                    log.error(
                        "the internal listener %s:%d could not start: /metrics is not served",
                        gateway_settings.gateway_internal_host,
                        gateway_settings.gateway_internal_port,
                    )

            try:
                await asyncio.gather(
                    servers[0].serve(), *(serve_internal(server) for server in servers[1:])
                )
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
        event_loop.run(serve_gateway(settings), settings.observability.event_loop)
