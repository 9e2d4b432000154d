"""`sagaway relay`: run a service's outbox relay, show its lag, or drop its replication slot.

sagaway relay [--service NAME] [--mode wal|poll]       # = sagaway relay run ...
sagaway relay lag [--service NAME]                      # one JSON line of lag figures
sagaway relay drop-slot [--service NAME]                # drop slot + publication
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import click
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.outbox.choose import RelayModeError, make_relay, relay_mode
from sagaway.outbox.lag import measure_lag
from sagaway.outbox.models import outbox_relays
from sagaway.outbox.poll_relay import POLL_RELAY_NAME
from sagaway.outbox.wal_slot import RelayError, drop_slot, slot_name
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database

log = logging.getLogger("sagaway.relay")

SERVICE_OPTION = click.option(
    "--service",
    default="orchestrator",
    show_default=True,
    help="Whose outbox to relay (its database: SAGAWAY_DATABASE_URL or <data_dir>/<service>.db).",
)
MODE_OPTION = click.option(
    "--mode",
    type=click.Choice(["wal", "poll"]),
    default=None,
    help="wal: logical replication slot (PostgreSQL only, its default); poll: published_at "
    "polling (SQLite's only mode).",
)


async def _check_migrated(engine: AsyncEngine) -> None:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.select(outbox_relays.c.name).limit(1))
    except sa.exc.DBAPIError as exc:
        raise click.ClickException(
            f"the database has no outbox_relays table ({type(exc.orig).__name__}): "
            "run `sagaway migrate` first"
        ) from None


async def run_relay(settings: Settings, service: str, mode: str | None) -> None:
    """Connect (waiting for a database or broker that is down) and relay until cancelled."""
    engine = await connect_database(settings.storage, service)
    try:
        await _check_migrated(engine)
        try:
            chosen = relay_mode(engine, mode)
        except RelayModeError as exc:
            raise click.ClickException(f"--mode {mode}: {exc}") from None
        transport = await connect_transport(settings.messaging)
        try:
            relay = make_relay(settings.relay, service, engine, transport, chosen)
            log.info("relaying the outbox of %s (%s mode)", service, chosen)
            await relay.run()
        finally:
            await transport.close()
    finally:
        await engine.dispose()


def _run_until_signalled(settings: Settings, service: str, mode: str | None) -> None:
    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        if settings.relay.relay_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.relay.relay_metrics_port)
        await run_relay(settings, service, mode)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        event_loop.run(runner(), settings.observability.event_loop)


@click.group("relay", invoke_without_command=True)
@SERVICE_OPTION
@MODE_OPTION
@click.pass_context
def relay(ctx: click.Context, service: str, mode: str | None) -> None:
    """Publish a service's outbox to the broker (WAL relay on PostgreSQL, polling on SQLite).

    Run one per service database; a second WAL relay stands by and takes over when the first
    dies. Without a sub-command this is `sagaway relay run`.
    """
    if ctx.invoked_subcommand is None:
        _run_until_signalled(ctx.obj, service, mode)


@relay.command("run")
@SERVICE_OPTION
@MODE_OPTION
@click.pass_obj
def run_command(settings: Settings, service: str, mode: str | None) -> None:
    """Relay until stopped (SIGTERM/Ctrl-C)."""
    _run_until_signalled(settings, service, mode)


@relay.command("drop-slot")
@SERVICE_OPTION
@click.pass_obj
def drop_slot_command(settings: Settings, service: str) -> None:
    """Drop the service's replication slot and publication (stop its relays first).

    Do this when a service's WAL relay is retired: an abandoned slot keeps all WAL from its
    position on. The next `sagaway relay` creates them again and publishes what is unpublished.
    """

    async def drop() -> list[str]:
        engine = await connect_database(settings.storage, service, give_up_after_s=10)
        try:
            return await drop_slot(engine, settings.relay, service)
        finally:
            await engine.dispose()

    try:
        dropped = asyncio.run(drop())
    except RelayError as exc:
        raise click.ClickException(str(exc)) from None
    if dropped:
        click.echo("dropped " + ", ".join(dropped))
    else:
        click.echo(f"nothing to drop: no slot or publication {slot_name(settings.relay, service)}")


@relay.command("lag")
@SERVICE_OPTION
@click.pass_obj
def lag_command(settings: Settings, service: str) -> None:
    """Print the relay's lag figures as one JSON line."""

    async def measure() -> bytes:
        engine = await connect_database(settings.storage, service, give_up_after_s=10)
        try:
            postgres = engine.dialect.name == "postgresql"
            name = slot_name(settings.relay, service) if postgres else POLL_RELAY_NAME
            lag = await measure_lag(engine, name, name if postgres else None)
            return orjson.dumps({"service": service, "relay": name, **lag.to_json()})
        finally:
            await engine.dispose()

    sys.stdout.buffer.write(asyncio.run(measure()) + b"\n")
