"""`sagaway participant NAME`: run one participant service on its own database until stopped.

    sagaway participant inventory            # an example by name (inventory, payments, shipping)
    sagaway participant shop.billing:participant   # your own, as package.module:attribute
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Awaitable, Callable

import click

from examples.place_order import UnknownParticipant, example
from participants.sdk import Participant
from participants.service import ParticipantService
from sagaway.cli.database_errors import database_errors_as_click
from sagaway.messaging.factory import connect_transport
from sagaway.observability import event_loop
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.observability.metrics import serve_metrics
from sagaway.outbox.choose import RelayModeError, make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database
from sagaway.storage.migrate import upgrade


def resolve_participant(name: str) -> Participant:
    """An example by name (inventory, payments, shipping), or `package.module:attribute`."""
    if ":" not in name:
        try:
            return example(name)
        except UnknownParticipant as exc:
            raise click.BadParameter(
                f"{exc}; or name your own as package.module:attribute", param_hint="NAME"
            ) from None
    module_name, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {name}: {exc}", param_hint="NAME") from None
    if not isinstance(found, Participant):
        raise click.BadParameter(f"{name} is a {type(found).__name__}, not a Participant")
    return found


def _run_until_signalled(work: Callable[[], Awaitable[None]], loop_choice: str = "asyncio") -> None:
    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await work()

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        event_loop.run(runner(), loop_choice)


@click.command("participant")
@click.argument("name", metavar="NAME")
@click.option(
    "--relay/--no-relay",
    default=True,
    show_default=True,
    help="Also relay this service's outbox (its replies) to the broker. Turn off when a "
    "separate `sagaway relay --service NAME` does it.",
)
@click.option(
    "--relay-mode",
    type=click.Choice(["wal", "poll"]),
    default=None,
    help="wal (PostgreSQL's default) or poll (SQLite's only mode).",
)
@click.option(
    "--migrate",
    "migrate_first",
    is_flag=True,
    help="Bring the service's database to the latest schema before starting.",
)
@click.pass_obj
def participant_command(
    settings: Settings, name: str, relay: bool, relay_mode: str | None, migrate_first: bool
) -> None:
    """Run participant NAME (inventory, payments, shipping, or package.module:attribute)
    on its own database: SAGAWAY_DATABASE_URL, or <data_dir>/NAME.db in embedded mode."""
    participant = resolve_participant(name)
    if migrate_first:
        url = settings.storage.database_url_for(participant.name)
        click.echo(database_errors_as_click(lambda: upgrade(url)).summary())
    metrics_port = settings.observability.metrics_port
    database_errors_as_click(lambda: serve_metrics(metrics_port, f"participant {participant.name}"))
    database_errors_as_click(
        lambda: _run_until_signalled(
            lambda: run_participant(settings, participant, relay, relay_mode),
            settings.observability.event_loop,
        )
    )


async def run_participant(
    settings: Settings, participant: Participant, relay_on: bool, relay_mode: str | None
) -> None:
    """Connect (waiting for a database or broker that is down), then run until cancelled."""
    engine = await connect_database(settings.storage, participant.name)
    try:
        transport = await connect_transport(settings.messaging)
        try:
            relay = None
            if relay_on:
                try:
                    relay = make_relay(
                        settings.relay, participant.name, engine, transport, relay_mode
                    )
                except RelayModeError as exc:
                    raise click.ClickException(f"--relay-mode {relay_mode}: {exc}") from None
            service = ParticipantService(
                participant, settings.participant, engine=engine, transport=transport, relay=relay
            )
            await service.run_forever(on_started=freeze_startup_heap)
        finally:
            await transport.close()
    finally:
        await engine.dispose()
