"""`sagaway relay` acts on what it names: `--service` and `--mode` reach every sub-command
(`run`, `lag`, `drop-slot`) whether given before or after it, and `lag` names the service and
the database it read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sagaway.cli.main import main
from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.outbox.models import outbox
from sagaway.outbox.writer import add_to_outbox
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.fixtures.postgres import PostgresForTests
from tests.harness.processes import RoleProcess, settings_environment
from tests.harness.waiting import eventually_sync
from tests.sagaway.outbox.writing import numbered

pytestmark = pytest.mark.timeout(90)

# The same sub-command with its option before it (an option of the group) and after it.
PLACEMENTS = {
    "before": lambda verb, option: [*option, verb],
    "after": lambda verb, option: [verb, *option],
}


def invoke(env: dict[str, str], *args: str) -> Result:
    """The CLI in process, with exactly these SAGAWAY_* variables."""
    return CliRunner().invoke(main, list(args), env=env)


def sagaway_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in settings_environment(settings).items()
        if key.startswith("SAGAWAY_")
    }
    env.update({f"SAGAWAY_{name.upper()}": value for name, value in extra.items()})
    return env


def write_outbox_row(url: str) -> None:
    """One unpublished outbox row in the database at `url`, written as a service writes it."""

    async def write() -> None:
        engine = create_database_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await add_to_outbox(conn, [("test.topic", numbered("k", 0))])
        finally:
            await engine.dispose()

    asyncio.run(write())


@pytest.fixture
def two_sqlite_services(tmp_path: Path) -> Settings:
    """Embedded mode: the orchestrator's and payments' databases migrated; one unpublished
    row in payments' outbox, none in the orchestrator's."""
    settings = tuned_settings(tmp_path / "data", relay_poll_interval_ms=10)
    for service in ("orchestrator", "payments"):
        upgrade(settings.storage.database_url_for(service))
    write_outbox_row(settings.storage.database_url_for("payments"))

    async def create_topic() -> None:
        broker = EmbeddedTransport(settings.messaging)
        await broker.start()
        try:
            await broker.create_topics({"test.topic": 1})
        finally:
            await broker.close()

    asyncio.run(create_topic())
    return settings


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_lag_reads_the_service_it_is_given_and_names_its_database(
    two_sqlite_services: Settings, placement: str
) -> None:
    args = PLACEMENTS[placement]("lag", ["--service", "payments"])

    result = invoke(sagaway_env(two_sqlite_services), "relay", *args)

    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    payments_db = (two_sqlite_services.storage.data_dir / "payments.db").resolve()
    assert figures["service"] == "payments"
    assert figures["database"] == f"SQLite file {payments_db}"
    assert figures["unpublished_rows"] == 1


def test_lag_of_a_service_without_a_database_file_says_so_and_creates_none(
    tmp_path: Path,
) -> None:
    settings = tuned_settings(tmp_path / "data")

    result = invoke(sagaway_env(settings), "relay", "--service", "payments", "lag")

    missing = (settings.storage.data_dir / "payments.db").resolve()
    assert result.exit_code == 1
    assert f"payments: no database at {missing}" in result.output
    assert not missing.exists()


def test_a_service_given_twice_differently_is_refused(two_sqlite_services: Settings) -> None:
    result = invoke(
        sagaway_env(two_sqlite_services),
        "relay", "--service", "payments", "lag", "--service", "orchestrator",
    )

    assert result.exit_code == 2
    assert "--service is given twice, as payments and orchestrator" in result.output


def test_the_group_mode_reaches_lag(two_sqlite_services: Settings) -> None:
    result = invoke(sagaway_env(two_sqlite_services), "relay", "--mode", "wal", "lag")

    assert result.exit_code == 1
    assert "--mode wal: the WAL relay needs PostgreSQL" in result.output


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_run_relays_the_outbox_of_the_service_it_is_given(
    two_sqlite_services: Settings, placement: str, tmp_path: Path
) -> None:
    settings = two_sqlite_services
    args = PLACEMENTS[placement]("run", ["--service", "payments"])
    relay = RoleProcess(
        "relay", ["relay", *args], settings_environment(settings), tmp_path / "relay.log",
        tmp_path,
    ).start()
    engine = sa.create_engine(f"sqlite:///{settings.storage.data_dir / 'payments.db'}")

    def published() -> bool:
        if not relay.alive:
            raise AssertionError(f"the relay exited:\n{relay.log_tail()}")
        with engine.connect() as conn:
            return bool(conn.scalar(sa.select(sa.func.count()).where(
                outbox.c.published_at.is_not(None)
            )))

    try:
        eventually_sync(
            published, timeout_s=40, what=lambda: f"payments' row published:\n{relay.log_tail()}"
        )
    finally:
        relay.stop()
        engine.dispose()
    assert "relaying the outbox of payments from SQLite file" in relay.output()


# -- PostgreSQL: a database per service through {service} in SAGAWAY_DATABASE_URL ------------


@pytest.fixture
def per_service_postgres(
    postgres_server: PostgresForTests, tmp_path: Path
) -> Iterator[Settings]:
    """Settings whose SAGAWAY_DATABASE_URL holds {service}; the orchestrator's and payments'
    databases exist and are migrated (dropped after the test)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = postgres_server.async_url(f"{prefix}_{{service}}")
    settings = tuned_settings(tmp_path / "data", database_url=url)
    names = [f"{prefix}_orchestrator", f"{prefix}_payments"]
    for name in names:
        postgres_server.create_database(name)
    try:
        for service in ("orchestrator", "payments"):
            upgrade(settings.storage.database_url_for(service))
        yield settings
    finally:
        for name in names:
            postgres_server.drop_database(name)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_drop_slot_drops_the_slot_and_publication_of_the_service_it_is_given(
    per_service_postgres: Settings, postgres_server: PostgresForTests, placement: str
) -> None:
    settings = per_service_postgres
    slot = f"s{uuid.uuid4().hex[:12]}"
    payments = settings.storage.database_url_for("payments").rsplit("/", 1)[1]
    postgres_server.execute(f'CREATE PUBLICATION "{slot}" FOR TABLE outbox', payments)
    postgres_server.execute(
        f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", payments
    )
    args = PLACEMENTS[placement]("drop-slot", ["--service", "payments"])

    result = invoke(sagaway_env(settings, relay_slot_name=slot), "relay", *args)

    assert result.exit_code == 0, result.output
    assert "payments (PostgreSQL at 127.0.0.1:" in result.output
    assert f"/{payments}): dropped replication slot {slot}, publication {slot}" in result.output
    assert postgres_server.execute(
        f"SELECT 1 FROM pg_publication WHERE pubname = '{slot}'", payments
    ) == []


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_mode_reaches_lag_on_postgresql(
    per_service_postgres: Settings, placement: str
) -> None:
    args = PLACEMENTS[placement]("lag", ["--service", "payments", "--mode", "poll"])

    result = invoke(sagaway_env(per_service_postgres), "relay", *args)

    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    assert (figures["service"], figures["relay"]) == ("payments", "poll")
    assert figures["database"].endswith("_payments")
    assert figures["unpublished_rows"] == 0
