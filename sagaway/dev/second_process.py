"""`sagaway dev`'s handle on its second process (sagaway/dev/participants.py runs inside it):
start it, wait until it is ready, start it again when it dies, stop it, and export its outbox
lag on the first process's /metrics.

The parent starts the child with a pipe on its stdin and waits for the line "ready" on its
stdout. The child stops when that pipe closes: when the parent stops it, and also when the
parent is killed (-9 included), so no orphan keeps consuming. A child that dies on its own is
started again; nothing is lost either way (inbox, outbox and committed offsets are on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.dev.participants import PARTICIPANTS, READY_LINE
from sagaway.observability.backoff import RetryDelay
from sagaway.settings.composed import Settings

log = logging.getLogger("sagaway.dev")

# How long the child may take to join its groups, and to stop before it is killed.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
RESTART_FIRST_S, RESTART_MAX_S = 0.5, 5.0


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
            str(self.settings.storage.data_dir),
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
        restart = RetryDelay(RESTART_FIRST_S, RESTART_MAX_S)
        while True:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            log.error(
                "the participants' process %d exited with code %s; starting it again in %.1fs",
                self.process.pid,
                code,
                restart.delay_s,
            )
            await restart.wait()
            try:
                self.process = await self._spawn()
                restart.reset()
            except (ParticipantsProcessError, OSError) as exc:
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


async def export_participant_lag(engines: Mapping[str, AsyncEngine], interval_s: float) -> None:
    """Until cancelled, measure each participant's outbox lag from its database: their relays
    export it in the child's registry, and /metrics is served by the parent."""
    from sagaway.outbox.lag import export_lag, measure_lag
    from sagaway.outbox.poll_relay import POLL_RELAY_NAME

    while True:
        for name in PARTICIPANTS:
            try:
                export_lag(name, await measure_lag(engines[name], POLL_RELAY_NAME))
            except Exception as exc:  # noqa: BLE001 - figures are best effort
                log.warning("could not measure %s's outbox lag: %s", name, exc)
        await asyncio.sleep(interval_s)
