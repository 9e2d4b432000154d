"""`sagaway orchestrator`: run the orchestrator service (consumer, timer loop, optional relay).

    sagaway orchestrator                 # relay runs apart: `sagaway relay --service orchestrator`
    sagaway orchestrator --with-relay    # also relay this database's outbox in this process
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click
import sqlalchemy as sa

from orchestrator.messages import SERVICE
from orchestrator.models import saga_instances
from orchestrator.registry import SagaModuleError, load_registry
from orchestrator.service import OrchestratorService
from sagaway.cli.database_errors import database_errors_as_click
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.observability.metrics import serve_metrics
from sagaway.outbox.choose import make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database, describe_database

log = logging.getLogger("sagaway.orchestrator")


async def run_orchestrator(settings: Settings, *, with_relay: bool) -> None:
    """Connect (waiting for a database or broker that is down), then serve until cancelled."""
    try:
        registry = load_registry(settings.orchestrator.sagas or [])
    except SagaModuleError as exc:
        raise click.ClickException(str(exc)) from None
    if not len(registry):
        raise click.ClickException(
            "no saga definitions are loaded: set SAGAWAY_SAGAS to the modules declaring them"
        )
    serve_metrics(settings.observability.metrics_port, "orchestrator")
    engine = await connect_database(settings.storage, SERVICE)
    try:
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.select(saga_instances.c.id).limit(1))
        except sa.exc.DBAPIError as exc:
            raise click.ClickException(
                f"{describe_database(engine.url)} has no saga tables ({type(exc.orig).__name__}): "
                "run `sagaway migrate` first"
            ) from None
        transport = await connect_transport(settings.messaging)
        try:
            relay = make_relay(settings.relay, SERVICE, engine, transport) if with_relay else None
            service = OrchestratorService(
                settings.orchestrator, registry, engine, transport, relay=relay
            )
            await service.start()
            freeze_startup_heap()
            log.info(
                "orchestrator running: %s; sagas %s",
                describe_database(engine.url),
                ", ".join(f"{d.saga_type} v{d.version}" for d in registry),
            )
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.shield(service.stop())
        finally:
            await transport.close()
    finally:
        await engine.dispose()


@click.command("orchestrator")
@click.option(
    "--with-relay",
    is_flag=True,
    default=False,
    help="Also run the outbox relay of the orchestrator's database in this process "
    "(WAL relay on PostgreSQL, polling on SQLite). Default: run `sagaway relay` separately.",
)
@click.pass_obj
def orchestrator_command(settings: Settings, with_relay: bool) -> None:
    """Run the saga orchestrator until SIGTERM/Ctrl-C.

    Loads the sagas of SAGAWAY_SAGAS, consumes orchestrator.requests and orchestrator.replies
    in the consumer group `<prefix>orchestrator` (run as many instances as you like), and fires
    step timeouts and retries from the timers table.
    """

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await run_orchestrator(settings, with_relay=with_relay)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        database_errors_as_click(
            lambda: event_loop.run(runner(), settings.observability.event_loop)
        )
