"""`sagaway relay`: run a service's outbox relay, show its lag, or drop its replication slot.

sagaway relay [--service NAME] [--mode wal|poll]       # = sagaway relay run ...
sagaway relay [--service NAME] lag                      # one JSON line of lag figures
sagaway relay [--service NAME] drop-slot                # drop slot + publication

The group's options reach every sub-command: `relay --service payments lag` and
`relay lag --service payments` read the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.cli.database_errors import STARTUP_ERRORS
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.observability.metrics import serve_metrics
from sagaway.outbox.choose import RelayModeError, make_relay, relay_mode
from sagaway.outbox.lag import measure_lag
from sagaway.outbox.models import outbox_relays
from sagaway.outbox.poll_relay import POLL_RELAY_NAME
from sagaway.outbox.wal_slot import RelayError, drop_slot, slot_name
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database, describe_database, is_sqlite, sqlite_path

log = logging.getLogger("sagaway.relay")

T = TypeVar("T")
DEFAULT_SERVICE = "orchestrator"

SERVICE_OPTION = click.option(
    "--service",
    default=None,
    help=f"Whose outbox [default: {DEFAULT_SERVICE}]: its database is SAGAWAY_DATABASE_URL "
    "(with {service} replaced by NAME) or <data_dir>/NAME.db. Before or after the sub-command.",
)
MODE_OPTION = click.option(
    "--mode",
    type=click.Choice(["wal", "poll"]),
    default=None,
    help="wal: logical replication slot (PostgreSQL only, its default); poll: published_at "
    "polling (SQLite's only mode). Before or after the sub-command.",
)


def _option(ctx: click.Context, name: str, given: T | None) -> T | None:
    """A sub-command's option: given after the sub-command, or else before it (to the group).
    Given in both places with different values is a usage error."""
    before = ctx.parent.params.get(name) if ctx.parent is not None else None
    if given is not None and before is not None and given != before:
        raise click.UsageError(
            f"--{name} is given twice, as {before} and {given}: give it once", ctx
        )
    return given if given is not None else before


def _service(ctx: click.Context, given: str | None) -> str:
    return _option(ctx, "service", given) or DEFAULT_SERVICE


def _as_click(action: Callable[[], T]) -> T:
    """`action()`, with a start-up failure or a relay that cannot run reported as one line."""
    try:
        return action()
    except (*STARTUP_ERRORS, RelayError) as exc:
        raise click.ClickException(str(exc)) from None


async def _check_migrated(engine: AsyncEngine) -> None:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.select(outbox_relays.c.name).limit(1))
    except sa.exc.DBAPIError as exc:
        raise click.ClickException(
            f"{describe_database(engine.url)} has no outbox_relays table "
            f"({type(exc.orig).__name__}): run `sagaway migrate` first"
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
            relay = make_relay(
                settings.relay, service, engine, transport, chosen, woken_by_commits=False
            )
            log.info(
                "relaying the outbox of %s from %s (%s mode)",
                service,
                describe_database(engine.url),
                chosen,
            )
            freeze_startup_heap()
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
        await run_relay(settings, service, mode)

    # The listener first: a relay whose metrics port is taken does not start at all.
    _as_click(
        lambda: serve_metrics(
            settings.relay.relay_metrics_port,
            f"{service} relay",
            setting="SAGAWAY_RELAY_METRICS_PORT",
        )
    )
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        _as_click(lambda: event_loop.run(runner(), settings.observability.event_loop))


def _run_once(settings: Settings, service: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`work` on the service's database (given up on after 10 s if it is down); a SQLite file
    that does not exist is reported, not created."""
    url = settings.storage.database_url_for(service)
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is not None and not path.exists():
        raise click.ClickException(
            f"{service}: no database at {path.resolve()} (set SAGAWAY_DATABASE_URL, with "
            "{service} in it for a database per service, or SAGAWAY_DATA_DIR)"
        )

    async def run() -> T:
        engine = await connect_database(settings.storage, service, give_up_after_s=10)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return _as_click(lambda: asyncio.run(run()))


@click.group("relay", invoke_without_command=True)
@SERVICE_OPTION
@MODE_OPTION
@click.pass_context
def relay(ctx: click.Context, service: str | None, mode: str | None) -> None:
    """Publish a service's outbox to the broker (WAL relay on PostgreSQL, polling on SQLite).

    Run one per service database; a second WAL relay stands by and takes over when the first
    dies. Without a sub-command this is `sagaway relay run`.
    """
    if ctx.invoked_subcommand is None:
        _run_until_signalled(ctx.obj, service or DEFAULT_SERVICE, mode)


@relay.command("run")
@SERVICE_OPTION
@MODE_OPTION
@click.pass_context
def run_command(ctx: click.Context, service: str | None, mode: str | None) -> None:
    """Relay until stopped (SIGTERM/Ctrl-C)."""
    _run_until_signalled(ctx.obj, _service(ctx, service), _option(ctx, "mode", mode))


@relay.command("drop-slot")
@SERVICE_OPTION
@click.pass_context
def drop_slot_command(ctx: click.Context, service: str | None) -> None:
    """Drop the service's replication slot and publication (stop its relays first).

    Do this when a service's WAL relay is retired: an abandoned slot keeps all WAL from its
    position on. The next `sagaway relay` creates them again and publishes what is unpublished.
    """
    settings: Settings = ctx.obj
    name = _service(ctx, service)
    if _option(ctx, "mode", None) == "poll":
        raise click.UsageError("--mode poll: a polling relay has no replication slot to drop")

    async def drop(engine: AsyncEngine) -> tuple[str, list[str]]:
        return describe_database(engine.url), await drop_slot(engine, settings.relay, name)

    database, dropped = _run_once(settings, name, drop)
    if dropped:
        click.echo(f"{name} ({database}): dropped " + ", ".join(dropped))
    else:
        click.echo(
            f"{name} ({database}): nothing to drop: no slot or publication "
            f"{slot_name(settings.relay, name)}"
        )


@relay.command("lag")
@SERVICE_OPTION
@MODE_OPTION
@click.pass_context
def lag_command(ctx: click.Context, service: str | None, mode: str | None) -> None:
    """Print the relay's lag figures as one JSON line, naming the service and the database it
    read (never the password); --mode poll measures a polling relay on PostgreSQL."""
    settings: Settings = ctx.obj
    name = _service(ctx, service)
    mode = _option(ctx, "mode", mode)

    async def measure(engine: AsyncEngine) -> dict[str, Any]:
        await _check_migrated(engine)
        try:
            chosen = relay_mode(engine, mode)
        except RelayModeError as exc:
            raise click.ClickException(f"--mode {mode}: {exc}") from None
        relay_name = slot_name(settings.relay, name) if chosen == "wal" else POLL_RELAY_NAME
        lag = await measure_lag(engine, relay_name, relay_name if chosen == "wal" else None)
        return {
            "service": name,
            "database": describe_database(engine.url),
            "relay": relay_name,
            **lag.to_json(),
        }

    figures = _run_once(settings, name, measure)
    sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    sys.stdout.flush()
