"""`sagaway dev`'s second process: the example participants (inventory, payments, shipping) and
their outbox relays, beside the first process's gateway, orchestrator and console.

Why a process of its own: every role of `sagaway dev` is Python on one event loop, so one
process uses one of the machine's cores; moving the participants out lets the system use two
(1.5× the sagas per second on a 2-core machine, see docs/benchmarks.md). The two processes share
the data dir's files: the SQLite databases (one per service, each used by one process) and the
embedded broker, whose cross-process wake-up keeps a hop between them as quick as within one.

The parent (`ParticipantsProcess`) starts the child with a pipe on its stdin and waits for the
line "ready" on its stdout. The child stops when that pipe closes: when the parent stops it, and
also when the parent is killed (-9 included), so no orphan keeps consuming. A child that dies on
its own is started again; nothing is lost either way (inbox, outbox and committed offsets are on
disk). Run by hand (for debugging): `python -m sagaway.dev.participants --data-dir DIR`.
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
from sagaway.settings import Settings

log = logging.getLogger("sagaway.dev")

PARTICIPANTS = ("inventory", "payments", "shipping")
READY_LINE = b"ready\n"
# How long the child may take to join its groups, and to stop before it is killed.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class ParticipantsProcessError(RuntimeError):
    """The participants' process could not be started."""


class ParticipantsProcess:
    """The parent's handle on the child: `await start()` returns once the participants have
    joined their groups; `await stop()` lets them finish the batch in hand and exit. While it
    runs, a child that exits unexpectedly is logged and started again."""

    def __init__(self, settings: Settings, grace_s: float) -> None:
        self.settings = settings
        self.grace_s = grace_s
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="dev-participants")

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagaway.dev.participants",
            "--data-dir",
            str(self.settings.data_dir),
            "--grace-s",
            str(self.grace_s),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            ready = await asyncio.wait_for(_ready(process), START_TIMEOUT_S)
        except TimeoutError:
            ready = None
        except BaseException:  # cancelled (stop() while starting): no orphan left behind
            process.kill()
            await process.wait()
            raise
        if ready is None:
            process.kill()
            await process.wait()
            raise ParticipantsProcessError(
                f"the participants' process was not ready within {START_TIMEOUT_S:.0f}s"
            )
        if not ready:
            code = await process.wait()
            raise ParticipantsProcessError(
                f"the participants' process exited with code {code} before it was ready"
                " (its error is printed above)"
            )
        log.info("participants run in process %d", process.pid)
        return process

    async def _supervise(self) -> None:
        """Start the child again when it exits while the system runs."""
        failures = 0
        while True:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            log.error(
                "the participants' process %d exited with code %s; starting it again in %.1fs",
                self.process.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            try:
                self.process = await self._spawn()
                failures = 0
            except (ParticipantsProcessError, OSError) as exc:
                failures += 1
                log.error("could not start the participants' process again: %s", exc)

    async def stop(self) -> None:
        """Close the child's stdin (its signal to stop), wait for it, kill it if it hangs."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self.process
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), self.grace_s + STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the participants' process did not stop in time: killing it")
            process.kill()
            await process.wait()


async def _ready(process: asyncio.subprocess.Process) -> bool:
    """True once the child says "ready" on its stdout; False if it ends first."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        if line == READY_LINE:
            return True
    return False


# ---------------------------------------------------------------- the child


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

    for name in PARTICIPANTS:
        participant = ParticipantService(
            example(name),
            settings,
            engine=engines[name],
            transport=transport,
            relay=True,
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
        transport = await connect_transport(settings)
        stack.push_async_callback(transport.close)
        engines: dict[str, AsyncEngine] = {}
        for name in PARTICIPANTS:
            engines[name] = await connect_database(settings, name)
            stack.push_async_callback(engines[name].dispose)
        await start_example_participants(settings, engines, transport, stack, grace_s)
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

    from sagaway.dev.system import dev_settings
    from sagaway.observability import event_loop
    from sagaway.observability.logs import configure_logging
    from sagaway.settings import load_settings

    settings = dev_settings(load_settings(), args.data_dir)
    configure_logging(settings)
    if settings.otel_exporter != "none":
        from sagaway.observability.tracing import configure_tracing, shutdown_tracing

        configure_tracing(settings, "sagaway-dev-participants")
    # Ctrl-C reaches the whole process group; the parent decides when we stop (it closes our
    # stdin after the gateway and the orchestrator have stopped).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        event_loop.run(run_participants(settings, args.grace_s), settings.event_loop)
    finally:
        if settings.otel_exporter != "none":
            shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
