"""Migrations: they run up and down on SQLite and PostgreSQL, match the models exactly, and
`sagaway migrate` works as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sagaway.cli.schema import MODEL_MODULES, all_metadata
from sagaway.storage.database import sync_url
from sagaway.storage.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from tests.servers.postgres import free_port

SCHEMA_TABLES = {"saga_instances", "saga_steps", "outbox", "inbox", "timers", "requests"}
SAGAWAY = Path(sys.executable).with_name("sagaway")


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(sync_url(url))
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def differences(url: str) -> list[object]:
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, all_metadata()))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_upgrade_head_creates_every_table_of_the_schema(empty_db_url: str) -> None:
    result = upgrade(empty_db_url)

    assert result.from_revision is None
    assert result.to_revision == head_revision()
    assert current_revision(empty_db_url) == head_revision()
    assert SCHEMA_TABLES <= table_names(empty_db_url)
    assert table_names(empty_db_url) == set(all_metadata().tables)


def test_models_and_migrations_agree_exactly(empty_db_url: str) -> None:
    upgrade(empty_db_url)

    assert differences(empty_db_url) == []


def test_downgrade_to_base_drops_everything_and_upgrade_rebuilds_it(empty_db_url: str) -> None:
    upgrade(empty_db_url)

    result = downgrade(empty_db_url, "base")
    assert result.to_revision is None
    assert table_names(empty_db_url) == set()

    upgrade(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    assert differences(empty_db_url) == []


def test_upgrade_twice_is_a_no_op(empty_db_url: str) -> None:
    upgrade(empty_db_url)

    again = upgrade(empty_db_url)

    assert again.from_revision == again.to_revision == head_revision()
    assert "already at revision" in again.summary()


def test_every_module_that_declares_tables_is_known_to_alembic() -> None:
    """A model module missing from MODEL_MODULES would make autogenerate miss its tables."""
    root = Path(__file__).resolve().parents[3]
    declaring = {
        ".".join(path.relative_to(root).with_suffix("").parts)
        for package in ("sagaway", "orchestrator", "participants", "gateway", "console", "examples")
        for path in (root / package).rglob("*.py")
        if "__tablename__" in path.read_text(encoding="utf-8")
    }

    assert declaring <= {module.__name__ for module in MODEL_MODULES}


def test_the_migration_history_has_one_head_starting_at_0001_initial() -> None:
    script = ScriptDirectory.from_config(alembic_config())

    assert len(script.get_heads()) == 1
    assert [r.revision for r in script.walk_revisions()][-1] == "0001_initial"


def test_concurrent_migrations_of_one_postgresql_database_both_succeed(pg_url: str) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: upgrade(pg_url), range(3)))

    assert sorted(r.from_revision or "" for r in results) == ["", head_revision(), head_revision()]
    assert all(r.to_revision == head_revision() for r in results)


def run_sagaway(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    environment.update(env or {})
    return subprocess.run(
        [str(SAGAWAY), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_sagaway_migrate_creates_the_embedded_sqlite_file_from_any_directory(
    tmp_path: Path,
) -> None:
    done = run_sagaway("migrate", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    database = tmp_path / ".sagaway" / "orchestrator.db"
    assert f"migrated SQLite file {database}" in done.stdout
    assert f"to {head_revision()}" in done.stdout
    assert SCHEMA_TABLES <= table_names(f"sqlite:///{database}")

    again = run_sagaway("migrate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already at revision" in again.stdout


def test_sagaway_migrate_uses_the_service_database_and_the_environment(tmp_path: Path) -> None:
    done = run_sagaway(
        "migrate", "--service", "payments", cwd=tmp_path, env={"SAGAWAY_DATA_DIR": "data"}
    )

    assert done.returncode == 0, done.stderr
    assert SCHEMA_TABLES <= table_names(f"sqlite:///{tmp_path / 'data' / 'payments.db'}")


def test_sagaway_migrate_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    done = run_sagaway("migrate", cwd=tmp_path, env={"SAGAWAY_DATABASE_URL": pg_url})

    assert done.returncode == 0, done.stderr
    assert "migrated PostgreSQL at 127.0.0.1" in done.stdout or "migrated PostgreSQL" in done.stdout
    assert SCHEMA_TABLES <= table_names(pg_url)
    assert current_revision(pg_url) == head_revision()


def test_sagaway_migrate_to_a_database_that_stays_down_fails_in_one_clear_line(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()

    done = run_sagaway(
        "migrate",
        "--database-url",
        f"postgresql+asyncpg://postgres:secret-pw@127.0.0.1:{port}/sagaway",
        "--wait",
        "1",
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert time.monotonic() - started < 15
    assert f"Error: PostgreSQL at 127.0.0.1:{port}/sagaway is unreachable after 1s" in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret-pw" not in done.stderr + done.stdout
    assert "is unavailable" in done.stderr  # it did retry, saying which database


def test_sagaway_migrate_names_a_missing_postgresql_database_without_waiting(
    tmp_path: Path, postgres_server: object, pg_url: str
) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    started = time.monotonic()

    done = run_sagaway("migrate", "--database-url", missing, "--wait", "30", cwd=tmp_path)

    assert done.returncode == 1
    assert time.monotonic() - started < 10
    assert "/no_such_database refused the connection" in done.stderr
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--database-url", "mysql://db/x"], "unsupported database URL scheme 'mysql'"),
        (["--database-url", "not a url"], "Could not parse"),
        (["--revision", "no_such_revision"], "Can't locate revision"),
    ],
)
def test_sagaway_migrate_rejects_bad_input_in_one_line(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    done = run_sagaway("migrate", *arguments, "--wait", "1", cwd=tmp_path)

    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_plain_alembic_cli_works_from_the_repository_root(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    database = tmp_path / "plain.db"

    done = subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), "-x", f"url=sqlite:///{database}",
         "upgrade", "head"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert current_revision(f"sqlite:///{database}") == head_revision()
