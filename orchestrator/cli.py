"""The `sagaway` command: one verb per role or operation. A verb exists only once it works."""

from __future__ import annotations

import logging

import click

from orchestrator import __version__
from orchestrator.config import Settings, load_settings


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


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
    ctx.obj = settings


# Verbs are registered below, each from the module that implements it.

import console.command  # noqa: E402,F401  (sagaway console)
import gateway.command  # noqa: E402,F401  (sagaway gateway)
import orchestrator.dev_command  # noqa: E402,F401  (sagaway dev)
import orchestrator.outbox.relay_command  # noqa: E402,F401
import orchestrator.service_command  # noqa: E402,F401  (sagaway orchestrator)
import orchestrator.storage.migrate_command  # noqa: E402,F401  (sagaway migrate)
import participants.cli  # noqa: E402,F401  (sagaway participant, seed, audit)
