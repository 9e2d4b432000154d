"""`sagaway asyncapi`: print the AsyncAPI 3.0 document of the configured sagas (the same one
the gateway serves at /asyncapi.json), with the topic names under SAGAWAY_TOPIC_PREFIX."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from orchestrator.asyncapi import asyncapi_document
from orchestrator.registry import SagaModuleError, SagaRegistry, load_registry
from sagaway import __version__
from sagaway.settings.composed import Settings


def configured_registry(settings: Settings) -> SagaRegistry:
    """The sagas of SAGAWAY_SAGAS (the example's when unset); a module that fails to import is
    a one-line click error."""
    try:
        return load_registry(settings.orchestrator.sagas or [])
    except SagaModuleError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("asyncapi")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the document to this file instead of standard output.",
)
@click.pass_obj
def asyncapi_command(settings: Settings, output: Path | None) -> None:
    """Print the AsyncAPI 3.0 document of the sagas' messages (JSON)."""
    document = asyncapi_document(
        configured_registry(settings),
        topic_prefix=settings.messaging.topic_prefix,
        version=__version__,
    )
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
