"""The stack a system under test runs on: tuned settings, a migrated database per service and a
broker — the embedded broker and SQLite files ("embedded"), or tansu and PostgreSQL with WAL
relays ("kafka") — and the reads of the orchestrator's database that tests assert on.

A `Stack` also carries what runs on it: the `client`, the in-process `roles` and the role
`processes`; `close()` stops them all and drops the databases."""

from __future__ import annotations

import functools
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from examples.place_order.seed import seed_inventory, seed_payments
from orchestrator.models import saga_instances
from sagaway.messaging.topics import TopicNames
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.fixtures.broker import tuned_settings
from tests.fixtures.postgres import PostgresForTests
from tests.harness.client import Client
from tests.harness.processes import RoleProcess, RoleProcesses, settings_environment
from tests.harness.roles import InProcessRoles
from tests.harness.waiting import eventually

KINDS = ("embedded", "kafka")
EXAMPLE_SERVICES = ("orchestrator", "inventory", "payments", "shipping")
TERMINAL = {"completed", "compensated", "failed"}

# Quick relays and timers, so that a lost message or a restarted role costs a test little time.
TUNING: dict[str, object] = {
    "relay_feedback_interval_s": 0.2,
    "relay_prune_interval_s": 0.05,
    "relay_heartbeat_interval_s": 1.0,
    "relay_standby_retry_s": 0.2,
    "relay_poll_interval_ms": 10,
    "startup_retry_max_s": 1.0,
    "timer_poll_interval_ms": 50,
    "database_pool_size": 4,
}


@dataclass(frozen=True)
class Servers:
    """What a stack takes from the session's fixtures: tansu and PostgreSQL (with a database at
    Alembic head to copy) for "kafka", a SQLite file at head to copy for "embedded"."""

    kafka_bootstrap: str | None = None
    postgres: PostgresForTests | None = None
    pg_template: str | None = None
    sqlite_template: Path | None = None

    @classmethod
    def of(cls, kind: str, request: pytest.FixtureRequest) -> Servers:
        """The servers of stack `kind`, started (once per session) by their fixtures."""
        if kind == "kafka":
            return cls(
                kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"),
                postgres=request.getfixturevalue("postgres_server"),
                pg_template=request.getfixturevalue("_migrated_template"),
            )
        assert kind == "embedded", kind
        return cls(sqlite_template=request.getfixturevalue("sqlite_template"))


@dataclass
class Stack:
    """Made by `create_stack` (databases and settings only) or `open_stack` (and a client)."""

    kind: str  # "embedded" | "kafka"
    settings: Settings
    servers: Servers
    urls: dict[str, str] = field(default_factory=dict)
    engines: dict[str, AsyncEngine] = field(default_factory=dict)
    opened_client: Client | None = None
    roles: InProcessRoles = field(init=False)
    processes: RoleProcesses = field(init=False)
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    _service_settings: dict[str, Settings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.roles = InProcessRoles(self)
        self.processes = RoleProcesses(self.data_dir / "logs", self.data_dir)

    @property
    def client(self) -> Client:
        """The client `open_stack` connected."""
        assert self.opened_client is not None, "a stack made by create_stack has no client"
        return self.opened_client

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.messaging.topic_prefix)

    @property
    def data_dir(self) -> Path:
        return self.settings.storage.data_dir

    # -- databases and settings --------------------------------------------------------------

    def add_database(self, service: str) -> str:
        """A database at Alembic head for `service` (and an engine on it); its URL."""
        if self.kind == "kafka":
            postgres = self.servers.postgres
            assert postgres is not None
            name = f"{service[:4]}_{uuid.uuid4().hex[:12]}"
            postgres.create_database(name, template=self.servers.pg_template)
            self.cleanup.append(functools.partial(postgres.drop_database, name))
            url = str(postgres.async_url(name))
        else:
            assert self.servers.sqlite_template is not None
            shutil.copyfile(self.servers.sqlite_template, self.data_dir / f"{service}.db")
            url = self.settings.storage.database_url_for(service)
        self.urls[service] = url
        self.engines[service] = create_database_engine(url, pool_size=4)
        return url

    def service_settings(self, service: str) -> Settings:
        """The settings every role of `service` runs with: its database and its own WAL slot
        (the same each time, so that a restarted role resumes where the last one stopped)."""
        if service not in self._service_settings:
            update: dict[str, object] = {
                "relay_slot_name": f"{service[:4]}_{uuid.uuid4().hex[:12]}"
            }
            if self.kind == "kafka":
                update["database_url"] = self.urls[service]
            self._service_settings[service] = self.settings.replace(**update)
        return self._service_settings[service]

    def environment(self, service: str | None = None, **extra: object) -> dict[str, str]:
        """The environment of a `sagaway` process of `service` (or of no one service) on this
        stack: its settings as SAGAWAY_* variables, plus `extra` ones by field name."""
        settings = self.service_settings(service) if service else self.settings
        return settings_environment(settings, **extra)

    def start_role(
        self,
        name: str,
        *args: str,
        service: str | None = None,
        settings: Settings | None = None,
        url: str | None = None,
        **extra: object,
    ) -> RoleProcess:
        """`sagaway <args>` as process `name`, with `service`'s settings (or `settings`) in its
        environment, plus `extra` variables by field name."""
        if settings is not None:
            env = settings_environment(settings, **extra)
        else:
            env = self.environment(service, **extra)
        return self.processes.start(name, list(args), env, url=url)

    async def seed(self) -> None:
        """The example services' customers and stock, on their databases."""
        await seed_inventory(self.engines["inventory"])
        await seed_payments(self.engines["payments"])

    # -- reads -------------------------------------------------------------------------------

    async def rows(self, service: str, query: sa.Select[Any]) -> list[dict[str, Any]]:
        async with self.engines[service].connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    async def statuses(self, saga_ids: Iterable[str]) -> dict[str, str]:
        query = sa.select(saga_instances.c.id, saga_instances.c.status).where(
            saga_instances.c.id.in_(list(saga_ids))
        )
        return {row["id"]: row["status"] for row in await self.rows("orchestrator", query)}

    async def failures(self, saga_ids: Iterable[str]) -> dict[str, Any]:
        """saga id → its failure column, for sagas that have one (for assertion messages)."""
        query = sa.select(saga_instances.c.id, saga_instances.c.failure).where(
            saga_instances.c.id.in_(list(saga_ids)), saga_instances.c.failure.is_not(None)
        )
        rows = await self.rows("orchestrator", query)
        return {row["id"]: row["failure"] for row in rows if row["failure"] is not None}

    async def saga(self, saga_id: str) -> dict[str, Any]:
        [row] = await self.rows(
            "orchestrator", sa.select(saga_instances).where(saga_instances.c.id == saga_id)
        )
        return row

    async def wait_terminal(
        self, saga_ids: Iterable[str], timeout_s: float = 30.0
    ) -> dict[str, str]:
        """Every saga's status, once all are completed, compensated or failed."""
        ids = list(saga_ids)
        found: dict[str, str] = {}

        async def all_ended() -> dict[str, str] | None:
            nonlocal found
            found = await self.statuses(ids)
            ended = len(found) == len(ids) and all(s in TERMINAL for s in found.values())
            return found if ended else None

        def pending() -> str:
            left = {i: found.get(i, "absent") for i in ids if found.get(i) not in TERMINAL}
            return f"{len(ids)} sagas to end ({len(left)} not yet: {dict(list(left.items())[:5])})"

        return await eventually(all_ended, timeout_s=timeout_s, what=pending)

    # -- life ----------------------------------------------------------------------------------

    async def close(self) -> None:
        self.processes.stop_all()
        await self.roles.close()
        if self.opened_client is not None:
            await self.opened_client.close()
        for engine in self.engines.values():
            await engine.dispose()
        for action in reversed(self.cleanup):
            action()


def create_stack(
    kind: str,
    data_dir: Path,
    servers: Servers,
    services: Iterable[str] = EXAMPLE_SERVICES,
    **overrides: object,
) -> Stack:
    """Tuned settings (a unique topic prefix, `overrides` by flat field name) and a migrated
    database per service; nothing connects yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = servers.kafka_bootstrap if kind == "kafka" else None
    settings = tuned_settings(data_dir, bootstrap, **{**TUNING, **overrides})
    stack = Stack(kind, settings, servers)
    try:
        for service in services:
            stack.add_database(service)
    except BaseException:
        for action in reversed(stack.cleanup):
            action()
        raise
    return stack


async def open_stack(
    kind: str,
    data_dir: Path,
    servers: Servers,
    services: Iterable[str] = EXAMPLE_SERVICES,
    *,
    seed: bool = True,
    collect_replies: bool = True,
    **overrides: object,
) -> Stack:
    """`create_stack`, the example data seeded (when the example services have databases), and
    a client on the broker collecting replies on its own topic; no role runs yet."""
    stack = create_stack(kind, data_dir, servers, services, **overrides)
    try:
        if seed and "inventory" in stack.engines:
            await stack.seed()
        stack.opened_client = await Client.open(stack.settings, collect_replies=collect_replies)
    except BaseException:
        await stack.close()
        raise
    return stack
