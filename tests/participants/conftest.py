"""Fixtures for participant tests: the example system on each stack, cheap to build per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagaway.storage.migrate import upgrade
from tests.participants.system import System, open_system_for

STACKS = ["embedded", "kafka"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at Alembic head, copied for each service of each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=STACKS)
def stack_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def system(
    stack_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    """The example system's databases (migrated, seeded) and a client; no service runs yet."""
    opened = await open_system_for(stack_kind, tmp_path / "data", request)
    try:
        yield opened
    finally:
        await opened.close()
