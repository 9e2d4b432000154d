"""The `sagaway` command: the group that reads the settings once, and every verb, registered
here by name. A verb exists only once it works."""

from __future__ import annotations

import click

from sagaway import __version__
from sagaway.cli.application import application
from sagaway.cli.asyncapi import asyncapi_command
from sagaway.cli.console import console_command
from sagaway.cli.console_user import console_user_command
from sagaway.cli.dev import dev_command
from sagaway.cli.examples import audit_command, seed_command
from sagaway.cli.gateway import gateway_command
from sagaway.cli.migrate import migrate_command
from sagaway.cli.orchestrator import orchestrator_command
from sagaway.cli.participant import participant_command
from sagaway.cli.relay import relay
from sagaway.cli.sagas import sagas_command
from sagaway.cli.topics import topics_command
from sagaway.settings.composed import Settings, load_settings


def configure_logging(settings: Settings) -> None:
    """Root logging as `log_format` says (text or JSON lines), every configured secret
    redacted."""
    from sagaway.observability.logs import configure_logging as configure

    configure(settings.observability, secrets=settings.secret_values())


def configure_tracing(ctx: click.Context, settings: Settings) -> None:
    """OpenTelemetry for the verb being run (its name is the default service.name); buffered
    spans are exported when the command ends."""
    if settings.observability.otel_exporter == "none":
        return
    from sagaway.observability.tracing import configure_tracing as configure
    from sagaway.observability.tracing import shutdown_tracing

    configure(settings.observability, f"sagaway-{ctx.invoked_subcommand or 'cli'}")
    ctx.call_on_close(shutdown_tracing)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sagaway")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Sagaway: a saga orchestrator for microservices that talk through Kafka.

    Settings come from SAGAWAY_* environment variables and the TOML file named by
    SAGAWAY_CONFIG; see the README for every option.
    """
    settings = load_settings()
    configure_logging(settings)
    configure_tracing(ctx, settings)
    ctx.obj = application(settings)


COMMANDS: tuple[click.Command, ...] = (
    dev_command,
    migrate_command,
    relay,
    orchestrator_command,
    gateway_command,
    participant_command,
    console_command,
    console_user_command,
    seed_command,
    audit_command,
    sagas_command,
    asyncapi_command,
    topics_command,
)
for command in COMMANDS:
    main.add_command(command)
