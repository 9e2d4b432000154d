"""`sagaway dev`: the whole system on embedded SQLite files and broker, in two processes (the
example participants in the second) or, with `--processes 1`, in one.

    sagaway dev                          # http://127.0.0.1:8000, data in ./.sagaway
    sagaway dev --port 9000 --data-dir /tmp/sagaway
    sagaway dev --reset                  # forget every saga, order and login first
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click

from sagaway.dev import DevError
from sagaway.dev.data_dir import reset_data_dir
from sagaway.dev.dev_settings import dev_settings, ignored_settings
from sagaway.dev.system import run_dev
from sagaway.observability import event_loop
from sagaway.settings.composed import Settings

log = logging.getLogger("sagaway.dev")


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port of the API, the console (/console) and /metrics; 0 picks a free one.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the SQLite files, the broker and the console login live "
    "[default: SAGAWAY_DATA_DIR, else ./.sagaway].",
)
@click.option(
    "--reset",
    is_flag=True,
    help="Delete the data dir's Sagaway files first (databases, broker, console login): "
    "start afresh. Other files in it are left alone.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 2),
    default=2,
    show_default=True,
    help="2 runs the example participants in a second process (uses two cores); "
    "1 runs everything in this one.",
)
@click.pass_obj
def dev_command(
    settings: Settings,
    host: str,
    port: int,
    data_dir: Path | None,
    reset: bool,
    processes: int,
) -> None:
    """Run the whole system: gateway, orchestrator, the example participants (inventory,
    payments, shipping), their relays and the console, on one SQLite file per service and the
    embedded broker; the participants in a second process unless --processes 1. Seeds the
    examples, prints the URLs and a curl to try.

    State is durable: Ctrl-C (or a crash) and `sagaway dev` again continues the sagas in flight.
    """
    for name in ignored_settings(settings):
        log.warning("%s is set but `sagaway dev` runs on embedded SQLite and broker: ignored", name)
    settings = dev_settings(settings, data_dir)
    if reset:
        try:
            removed = reset_data_dir(settings.storage.data_dir)
        except DevError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"--reset: deleted {len(removed)} file(s) from {settings.storage.data_dir}"
            if removed
            else f"--reset: nothing to delete in {settings.storage.data_dir}",
            err=True,
        )

    def echo(text: str) -> None:
        click.echo(text)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            event_loop.run(
                run_dev(
                    settings,
                    host=host,
                    port=port,
                    echo=echo,
                    participants_process=processes == 2,
                ),
                settings.observability.event_loop,
            )
    except DevError as exc:
        raise click.ClickException(str(exc)) from None
