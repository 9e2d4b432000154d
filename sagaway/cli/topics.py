"""`sagaway topics`: the broker's topics against what the configuration asks (docs/scaling.md).

sagaway topics          # every topic: partitions, replication, consumer groups
sagaway topics plan     # configured vs found: create / grow / ok / refused: shrink
sagaway topics grow SERVICE --partitions N [--dry-run]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from sagaway.messaging.factory import connect_transport
from sagaway.messaging.topic_admin import TopicInfo, describe_topics
from sagaway.messaging.topic_grow import GrowRefused, growth, raise_partitions
from sagaway.messaging.topic_plan import known_services, plan, wanted_topics
from sagaway.messaging.transport import Transport, TransportError
from sagaway.settings.composed import Settings

T = TypeVar("T")


def _with_transport(settings: Settings, action: Callable[[Transport], Awaitable[T]]) -> T:
    async def run() -> T:
        transport = await connect_transport(settings.messaging, give_up_after_s=10.0)
        try:
            return await action(transport)
        finally:
            await transport.close()

    try:
        return asyncio.run(run())
    except TransportError as exc:
        raise click.ClickException(str(exc)) from None


def _unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def _groups(info: TopicInfo) -> str:
    if info.groups is None:
        return "unknown (the broker lists no consumer groups)"
    return ",".join(info.groups) or "-"


@click.group("topics", invoke_without_command=True)
@click.pass_context
def topics_command(ctx: click.Context) -> None:
    """List every topic with its partitions, replication factor and consumer groups."""
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    found = _with_transport(settings, describe_topics)
    click.echo(f"{'topic':<40} {'partitions':>10} {'replication':>11}  groups")
    for name, info in found.items():
        click.echo(
            f"{name:<40} {info.partitions:>10} {_unknown(info.replication):>11}  {_groups(info)}"
        )


@topics_command.command("plan")
@click.pass_obj
def plan_command(settings: Settings) -> None:
    """What the configuration asks for against what the broker has. Exits 1 when a topic has
    more partitions than configured (shrinking is refused: see docs/scaling.md)."""
    found = _with_transport(settings, describe_topics)
    services = known_services(settings.messaging, found)
    lines = plan(
        wanted_topics(settings.messaging, services), {n: i.partitions for n, i in found.items()}
    )
    click.echo(f"{'topic':<40} {'wanted':>6} {'found':>6}  action")
    for line in lines:
        click.echo(
            f"{line.topic:<40} {line.wanted.partitions:>6} {_unknown(line.found):>6}  {line.action}"
        )
    if any(line.action.startswith("refused") for line in lines):
        raise click.ClickException(
            "a topic has more partitions than configured: Kafka cannot remove partitions, and "
            "records on them would be stranded; raise the configured count instead"
        )


@topics_command.command("grow")
@click.argument("service")
@click.option("--partitions", "count", type=click.IntRange(min=1), required=True)
@click.option("--dry-run", is_flag=True, help="Print what would be raised; change nothing.")
@click.pass_obj
def grow_command(settings: Settings, service: str, count: int, dry_run: bool) -> None:
    """Raise SERVICE's request and reply topics (and DLQs) to --partitions, with sagas running:
    each saga's records keep the partition count it started with, and new sagas use the new
    count once the orchestrators read it (metadata_max_age_ms). Shrinking is refused. Set
    SAGAWAY_SERVICE_PARTITIONS to the same count so new deployments create it."""
    wanted = wanted_topics(settings.messaging, [service])

    async def act(transport: Transport) -> dict[str, int]:
        found = await describe_topics(transport)
        present = {t: found[t].partitions for t in wanted if t in found}
        if not present:
            raise click.ClickException(f"no topic of service {service!r} exists on the broker")
        to_raise = growth(present, count)
        if to_raise and not dry_run:
            await raise_partitions(transport, to_raise)
        return to_raise

    try:
        to_raise = _with_transport(settings, act)
    except GrowRefused as exc:
        raise click.ClickException(str(exc)) from None
    if not to_raise:
        click.echo(f"{service}: every topic already has {count} partitions")
        return
    for topic in sorted(to_raise):
        click.echo(f"{topic}: {'would raise to' if dry_run else 'raised to'} {count}")
    if not dry_run:
        age_s = settings.messaging.metadata_max_age_ms / 1000
        click.echo(
            f"sagas in flight keep their partitions; consumers read the new ones within "
            f"{age_s:g} s (metadata_max_age_ms), and new sagas use all {count} from "
            f"{2 * age_s:g} s on"
        )
