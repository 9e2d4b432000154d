"""`ParticipantService`: one participant as a running service — its command runner and the relay
that publishes its replies — on its own database. `sagaway participant NAME` and `sagaway dev` run
it; tests run it in-process.

    relay = make_relay(relay_settings, "inventory", engine, transport)
    service = ParticipantService(
        example("inventory"), settings, engine=engine, transport=transport, relay=relay
    )
    await service.start()      # checks the schema, starts the relay, joins the group
    ...
    await service.stop()       # the engine and transport stay open: they are the caller's
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from participants.runner import ParticipantRunner
from participants.sdk import Participant
from sagaway.inbox import prune_inbox
from sagaway.messaging.transport import Transport
from sagaway.outbox.choose import Relay
from sagaway.outbox.wal_relay import WalRelay
from sagaway.settings import ParticipantSettings
from sagaway.storage.database import describe_database
from sagaway.storage.migrate import head_revision, upgrade

log = logging.getLogger("sagaway.participant")

PRUNE_INTERVAL_MAX_S = 600.0


class DatabaseNotMigrated(RuntimeError):
    """The participant's database is not at the latest schema; `sagaway migrate` fixes it."""


async def check_migrated(engine: AsyncEngine, service: str) -> None:
    """Raise DatabaseNotMigrated unless `engine`'s database is at Alembic head."""
    async with engine.connect() as conn:
        current = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    head = head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"{describe_database(engine.url)} is at revision {current or 'none (empty)'}, "
            f"not {head}: run `sagaway migrate --service {service}` first"
        )


class ParticipantService:
    """Runs `participant` until stopped: the runner on `<name>.requests`, a task that prunes
    inbox rows older than `inbox_retention_s`, and, when given, the `relay` of its database's
    outbox (which publishes its replies).

    `engine` (the participant's database) and `transport` are the caller's: it opens them
    before and closes them after. `migrate=True` brings the database to Alembic head first (for
    a single process such as `sagaway dev`; with several instances, migrate once beforehand).
    Handlers get `participant_settings` as `ctx.settings`; without it, the participant's own
    are built at start (`participant.settings()`).
    """

    def __init__(
        self,
        participant: Participant,
        settings: ParticipantSettings,
        *,
        engine: AsyncEngine,
        transport: Transport,
        relay: Relay | None = None,
        check_schema: bool = True,
        migrate: bool = False,
        participant_settings: Any = None,
    ) -> None:
        self.participant = participant
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self.relay = relay
        self.check_schema = check_schema
        self.migrate = migrate
        self.participant_settings = participant_settings
        self.runner: ParticipantRunner | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.participant.name

    async def start(self) -> None:
        """Migrate or check the schema, start the relay and join the consumer group."""
        try:
            if self.migrate:
                url = self.engine.url.render_as_string(hide_password=False)
                await asyncio.to_thread(upgrade, url)
            if self.check_schema:
                await check_migrated(self.engine, self.name)
            if self.participant_settings is None:
                self.participant_settings = self.participant.settings()
            if self.relay is not None:
                self._relay_task = asyncio.create_task(
                    self.relay.run(), name=f"relay-{self.name}"
                )
            self.runner = ParticipantRunner(
                self.participant,
                self.settings,
                self.engine,
                self.transport,
                participant_settings=self.participant_settings,
            )
            await self.runner.start()
            self._prune_task = asyncio.create_task(self._prune_inbox(), name=f"inbox-{self.name}")
        except BaseException:
            await self.stop()
            raise
        log.info(
            "participant %s handles %s on %s",
            self.name,
            ", ".join(self.participant.commands),
            self.runner.requests_topic,
        )

    async def prune_inbox_once(self) -> int:
        """Forget the message ids handled longer than `inbox_retention_s` ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.inbox_retention_s)
        async with self.engine.begin() as conn:
            return await prune_inbox(conn, cutoff)

    async def _prune_inbox(self) -> None:
        interval = min(PRUNE_INTERVAL_MAX_S, self.settings.inbox_retention_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                pruned = await self.prune_inbox_once()
                if pruned:
                    log.debug("%s: pruned %d inbox rows", self.name, pruned)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("%s: inbox pruning failed: %s", self.name, exc)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the runner owns partitions (and a WAL relay holds its slot)."""
        assert self.runner is not None, "start() first"
        await self.runner.wait_assigned(timeout_s)
        if isinstance(self.relay, WalRelay):
            await asyncio.wait_for(self.relay.active.wait(), timeout_s)

    async def run_forever(self, *, on_started: Callable[[], object] | None = None) -> None:
        """Start (then call `on_started`), run until cancelled (or the relay dies), then stop."""
        await self.start()
        if on_started is not None:
            on_started()
        try:
            waits: list[asyncio.Future[None]] = []
            if self.runner is not None:
                waits.append(asyncio.ensure_future(self.runner.processor.join()))
            if self._relay_task is not None:
                waits.append(self._relay_task)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                if wait.done() and not wait.cancelled() and wait.exception() is not None:
                    raise wait.exception()  # type: ignore[misc]
        finally:
            await self.stop()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish the batch in hand, stop the inbox pruning and the relay."""
        if self.runner is not None:
            await self.runner.stop(grace_s)
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prune_task
            self._prune_task = None
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relay_task
            self._relay_task = None

    async def __aenter__(self) -> ParticipantService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["DatabaseNotMigrated", "ParticipantService", "check_migrated"]
