"""`sagaway dev`'s second process: the example participants (inventory, payments, shipping) and
their outbox relays, beside the first process's gateway, orchestrator and console.

Why a process of its own: every role of `sagaway dev` is Python on one event loop, so one
process uses one of the machine's cores; moving the participants out lets the system use two
(1.5× the sagas per second on a 2-core machine, see docs/benchmarks.md). The two processes share
the data dir's files: the SQLite databases (one per service, each used by one process) and the
embedded broker, whose cross-process wake-up keeps a hop between them as quick as within one.

This process says "ready" on its stdout once the participants have joined their groups, and
stops when its stdin closes (sagaway/dev/second_process.py is the parent's side). Run by hand
(for debugging): `python -m sagaway.dev.participants --data-dir DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.transport import Transport
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.settings.composed import Settings

log = logging.getLogger("sagaway.dev")

PARTICIPANTS = ("inventory", "payments", "shipping")
READY_LINE = b"ready\n"


async def _until_stdin_closes() -> None:
    """Returns when the parent closes our stdin or dies (the read end then sees EOF)."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and not closed.done():
            closed.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await closed
    finally:
        loop.remove_reader(fd)


async def start_example_participants(
    settings: Settings,
    engines: Mapping[str, AsyncEngine],
    transport: Transport,
    stack: contextlib.AsyncExitStack,
    grace_s: float,
) -> None:
    """Start inventory, payments and shipping (each with its relay) on the given engines and
    transport; `stack` stops them, each finishing its batch within `grace_s`."""
    from examples.place_order import example
    from participants.service import ParticipantService
    from sagaway.outbox.choose import make_relay

    for name in PARTICIPANTS:
        participant = ParticipantService(
            example(name),
            settings.participant,
            engine=engines[name],
            transport=transport,
            relay=make_relay(settings.relay, name, engines[name], transport),
            check_schema=False,
        )
        await participant.start()
        stack.push_async_callback(participant.stop, grace_s)


async def run_participants(settings: Settings, grace_s: float) -> None:
    """Start the participants on the data dir's databases and broker, say "ready", and run
    until stdin closes or SIGTERM comes."""
    from sagaway.messaging.factory import connect_transport
    from sagaway.storage.database import connect_database

    loop = asyncio.get_running_loop()
    stop = asyncio.ensure_future(_until_stdin_closes())
    loop.add_signal_handler(signal.SIGTERM, stop.cancel)
    async with contextlib.AsyncExitStack() as stack:
        transport = await connect_transport(settings.messaging)
        stack.push_async_callback(transport.close)
        engines: dict[str, AsyncEngine] = {}
        for name in PARTICIPANTS:
            engines[name] = await connect_database(settings.storage, name)
            stack.push_async_callback(engines[name].dispose)
        await start_example_participants(settings, engines, transport, stack, grace_s)
        freeze_startup_heap()
        sys.stdout.buffer.write(READY_LINE)
        sys.stdout.flush()
        with contextlib.suppress(asyncio.CancelledError):
            await stop
        log.info("participants stopping")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--grace-s", type=float, default=3.0)
    args = parser.parse_args(argv)

    from sagaway.dev.dev_settings import dev_settings
    from sagaway.observability import event_loop
    from sagaway.observability.logs import configure_logging
    from sagaway.settings.composed import load_settings

    settings = dev_settings(load_settings(), args.data_dir)
    observability = settings.observability
    configure_logging(observability, secrets=settings.secret_values())
    if observability.otel_exporter != "none":
        from sagaway.observability.tracing import configure_tracing, shutdown_tracing

        configure_tracing(observability, "sagaway-dev-participants")
    # Ctrl-C reaches the whole process group; the parent decides when we stop (it closes our
    # stdin after the gateway and the orchestrator have stopped).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        event_loop.run(run_participants(settings, args.grace_s), observability.event_loop)
    finally:
        if observability.otel_exporter != "none":
            shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
