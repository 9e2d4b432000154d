"""Console fixtures: migrated SQLite databases in a data dir (orchestrator and gateway), sagas in
every state made by the real engine, and a logged-in TestClient per role."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from console.app import create_console_app
from console.auth import hash_password
from orchestrator.registry import load_registry
from sagaway.settings import ConsoleSettings, ConsoleUser
from sagaway.settings.composed import Settings, load_settings
from sagaway.storage.database import create_database_engine
from tests.console import seeding

PASSWORDS = {"olga": "operator-pw", "vera": "viewer-pw"}
_HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def console_settings(data_dir: Path, database_url: str | None = None, **console: Any) -> Settings:
    values: dict[str, Any] = {
        "users": [
            ConsoleUser(name="olga", role="operator", password_hash=_HASHES["olga"]),
            ConsoleUser(name="vera", role="viewer", password_hash=_HASHES["vera"]),
        ],
        "session_secret": "test-secret",
        "services": ["orchestrator", "gateway", "seats", "cards"],
    }
    values.update(console)
    return load_settings(
        data_dir=data_dir,
        database_url=database_url,
        embedded_poll_interval_ms=20,
        console=ConsoleSettings.model_validate(values),
    )


def console_app(settings: Settings, *, background: bool = False) -> Starlette:
    """The console over these settings' broker and databases, acting on tests.console.sagas."""
    return create_console_app(
        settings.console,
        messaging=settings.messaging,
        storage=settings.storage,
        registry=load_registry(["tests.console.sagas"]),
        background=background,
    )


@dataclass
class Seeded:
    settings: Settings
    completed: str
    waiting: str
    compensated: str
    failed: str
    request_id: str

    def run(self, coro: Any) -> Any:
        """Run a coroutine against the orchestrator database, on a loop of its own."""

        async def wrapped() -> Any:
            engine = create_database_engine(self.settings.storage.database_url_for("orchestrator"))
            try:
                return await coro(engine)
            finally:
                await engine.dispose()

        return asyncio.run(wrapped())


def seed(settings: Settings) -> Seeded:
    """Sagas in every state (and a request held open) in these settings' databases."""

    async def run() -> Seeded:
        engine = create_database_engine(settings.storage.database_url_for("orchestrator"))
        gateway = create_database_engine(settings.storage.database_url_for("gateway"))
        try:
            done = await seeding.completed(engine)
            waiting = await seeding.waiting_at_charge(engine)
            comp = await seeding.compensated(engine)
            failed = await seeding.failed_on_arrival(engine)
            await seeding.accepted_request(gateway, "req-held-open-1")
        finally:
            await engine.dispose()
            await gateway.dispose()
        return Seeded(settings, done, waiting, comp, failed, "req-held-open-1")

    return asyncio.run(run())


@pytest.fixture
def seeded(tmp_path: Path, sqlite_template: Path) -> Seeded:
    settings = console_settings(tmp_path)
    for service in ("orchestrator", "gateway"):
        shutil.copyfile(sqlite_template, tmp_path / f"{service}.db")
    return seed(settings)


@pytest.fixture
def pg_seeded(tmp_path: Path, migrated_pg_url: str) -> Seeded:
    """The same sagas in one PostgreSQL database (every service's tables in it)."""
    return seed(console_settings(tmp_path, database_url=migrated_pg_url))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_seeded(request: pytest.FixtureRequest) -> Seeded:
    """`seeded` on SQLite, then `pg_seeded`: a test taking it runs on both databases."""
    name = "seeded" if request.param == "sqlite" else "pg_seeded"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def log_in(client: TestClient, name: str, prefix: str = "") -> None:
    page = client.get(f"{prefix}/login")
    assert page.status_code == 200
    response = client.post(
        f"{prefix}/login",
        data={"username": name, "password": PASSWORDS[name], "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def _client_maker(seeded: Seeded) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(user: str | None = "olga", *, background: bool = False, **settings: Any) -> TestClient:
        config = seeded.settings
        if settings:
            config = console_settings(
                seeded.settings.storage.data_dir, seeded.settings.storage.database_url, **settings
            )
        app = console_app(config, background=background)
        client = TestClient(app, base_url="https://testserver")
        client.__enter__()
        clients.append(client)
        if user:
            log_in(client, user)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_client(seeded: Seeded) -> Iterator[Any]:
    yield from _client_maker(seeded)


@pytest.fixture
def make_any_client(any_seeded: Seeded) -> Iterator[Any]:
    """make_client over `any_seeded` (SQLite, then PostgreSQL)."""
    yield from _client_maker(any_seeded)


@pytest.fixture
def operator(make_client: Any) -> TestClient:
    return make_client("olga")  # type: ignore[no-any-return]


@pytest.fixture
def viewer(make_client: Any) -> TestClient:
    return make_client("vera")  # type: ignore[no-any-return]
