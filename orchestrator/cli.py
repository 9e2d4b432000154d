"""The `sagaway` command: one verb per role or operation. A verb exists only once it works."""

from __future__ import annotations

import click

from orchestrator import __version__
from orchestrator.config import Settings, load_settings


def configure_logging(settings: Settings) -> None:
    """Root logging as `log_format` says (text or JSON lines), secrets redacted."""
    from orchestrator.observability.logs import configure_logging as configure

    configure(settings)


def configure_tracing(ctx: click.Context, settings: Settings) -> None:
    """OpenTelemetry for the verb being run (its name is the default service.name); buffered
    spans are exported when the command ends."""
    if settings.otel_exporter == "none":
        return
    from orchestrator.observability.tracing import configure_tracing as configure
    from orchestrator.observability.tracing import shutdown_tracing

    configure(settings, f"sagaway-{ctx.invoked_subcommand or 'cli'}")
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
    ctx.obj = settings


# Verbs are registered below, each from the module that implements it.

import console.command  # noqa: E402,F401  (sagaway console)
import gateway.command  # noqa: E402,F401  (sagaway gateway)
import orchestrator.dev_command  # noqa: E402,F401  (sagaway dev)
import orchestrator.outbox.relay_command  # noqa: E402,F401
import orchestrator.service_command  # noqa: E402,F401  (sagaway orchestrator)
import orchestrator.storage.migrate_command  # noqa: E402,F401  (sagaway migrate)
import participants.cli  # noqa: E402,F401  (sagaway participant, seed, audit)
