"""Fixtures for relay tests: engines on the test databases and relay-tuned settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.fixtures.broker import tuned_settings

RELAY_TUNING: dict[str, Any] = {
    "relay_feedback_interval_s": 0.2,
    "relay_prune_interval_s": 0.05,
    "relay_heartbeat_interval_s": 0.5,
    "relay_standby_retry_s": 0.2,
    "relay_poll_interval_ms": 10,
    "startup_retry_max_s": 1.0,
}


@pytest.fixture
def relay_kafka_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    return tuned_settings(tmp_path / "data", kafka_bootstrap, **RELAY_TUNING)


@pytest.fixture
def relay_embedded_settings(tmp_path: Path) -> Settings:
    return tuned_settings(tmp_path / "data", **RELAY_TUNING)


@pytest.fixture
async def pg_engine(migrated_pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_pg_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_engine(migrated_sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_sqlite_url)
    yield engine
    await engine.dispose()
