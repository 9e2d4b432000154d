"""`sagaway migrate`: each `--service` on its own database through `{service}` in
SAGAWAY_DATABASE_URL, and `--create-database` creating what is missing and saying so."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sagaway.cli.main import main
from sagaway.storage.migrate import current_revision, head_revision
from tests.fixtures.postgres import PostgresForTests

pytestmark = pytest.mark.timeout(120)


def migrate(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["migrate", *args], env=env)


@pytest.fixture
def database_prefix(postgres_server: PostgresForTests) -> Iterator[str]:
    """A unique prefix for the databases a test creates; they are dropped after it."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    for (name,) in postgres_server.execute(
        f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}')"
    ):
        postgres_server.drop_database(str(name))


def test_create_database_creates_each_service_database_then_migrates_it(
    postgres_server: PostgresForTests, database_prefix: str
) -> None:
    env = {"SAGAWAY_DATABASE_URL": postgres_server.async_url(f"{database_prefix}_{{service}}")}

    first = migrate(env, "--service", "gateway", "--service", "payments", "--create-database")

    assert first.exit_code == 0, first.output
    head = head_revision()
    for service in ("gateway", "payments"):
        name = f"{database_prefix}_{service}"
        assert "created PostgreSQL at 127.0.0.1:" in first.output
        assert f"/{name}\n" in first.output
        assert f"/{name} from base (empty) to {head}" in first.output
        assert current_revision(postgres_server.async_url(name)) == head

    again = migrate(env, "--service", "payments", "--create-database")

    assert again.exit_code == 0, again.output
    assert f"/{database_prefix}_payments exists" in again.output
    assert f"is already at revision {head}" in again.output


def test_a_missing_database_says_how_to_create_it(
    postgres_server: PostgresForTests, database_prefix: str
) -> None:
    env = {"SAGAWAY_DATABASE_URL": postgres_server.async_url(f"{database_prefix}_{{service}}")}

    result = migrate(env, "--service", "shipping", "--wait", "5")

    assert result.exit_code == 1
    assert f'database "{database_prefix}_shipping" does not exist' in result.output
    assert "add --create-database to create it" in result.output


def test_create_database_on_sqlite_creates_the_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "there"

    result = migrate({"SAGAWAY_DATA_DIR": str(data_dir)}, "--service", "shipping",
                     "--create-database")

    assert result.exit_code == 0, result.output
    assert f"SQLite file {data_dir.resolve()}/shipping.db: created its directory" in result.output
    assert (data_dir / "shipping.db").exists()


def test_one_database_url_takes_one_service(tmp_path: Path) -> None:
    result = migrate(
        {}, "--database-url", f"sqlite:///{tmp_path}/x.db", "--service", "a", "--service", "b"
    )

    assert result.exit_code == 2
    assert "--database-url names one database: give --service once" in result.output
