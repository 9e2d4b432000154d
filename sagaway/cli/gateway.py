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
from sagaway.cli.moved_saga_modules import current_saga_modules
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.settings import Settings
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
    try:
        registry = load_registry(current_saga_modules(settings))
    except SagaModuleError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(registry):
        log.warning("no saga modules are configured (SAGAWAY_SAGAS): every start answers 404")
    engine = await connect_database(settings, SERVICE)
    try:
        await check_migrated(engine)
        transport = await connect_transport(settings)
        try:
            app = create_gateway_app(settings, registry, engine, transport, manage_lifecycle=False)
            gateway = app.state.gateway
            await gateway.start()
            level = settings.log_level.lower()
            servers = [
                _Server(
                    uvicorn.Config(
                        app,
                        host=settings.gateway_host,
                        port=settings.gateway_port,
                        lifespan="off",
                        log_level=level,
                        access_log=False,
                        log_config=None,  # our handler formats uvicorn's lines too
                    )
                )
            ]
            if settings.gateway_internal_port:
                servers.append(
                    _Server(
                        uvicorn.Config(
                            create_internal_app(gateway),
                            host=settings.gateway_internal_host,
                            port=settings.gateway_internal_port,
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
                f"gateway {gateway.instance_id} on http://{settings.gateway_host}:"
                f"{settings.gateway_port}"
                + (
                    f" (metrics on http://{settings.gateway_internal_host}:"
                    f"{settings.gateway_internal_port}/metrics)"
                    if settings.gateway_internal_port
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
                        settings.gateway_internal_host,
                        settings.gateway_internal_port,
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
    settings = settings.model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(serve_gateway(settings), settings.event_loop)
