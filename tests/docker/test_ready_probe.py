"""docker/ready.py, the health check of the roles without an HTTP listener, against real TCP
connections of this test's own network namespace."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.docker.compose_file import DOCKER


@pytest.fixture(scope="module")
def ready() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_ready", DOCKER / "ready.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def port_of(server: socket.socket) -> int:
    return int(server.getsockname()[1])


def test_ready_once_connected_to_the_broker(
    ready: ModuleType, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAWAY_KAFKA_BOOTSTRAP", f"localhost:{port_of(listener)}")
    assert ready.main(["broker"]) == 1, "ready before any connection"
    with socket.create_connection(("127.0.0.1", port_of(listener))):
        accepted, _ = listener.accept()
        with accepted:
            assert ready.main(["broker"]) == 0
    assert ready.main(["broker"]) == 1, "still ready after the connection closed"


def test_a_relay_needs_its_database_connection_too(
    ready: ModuleType,
    listener: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as database:
        monkeypatch.setenv("SAGAWAY_KAFKA_BOOTSTRAP", f"127.0.0.1:{port_of(listener)}")
        monkeypatch.setenv(
            "SAGAWAY_DATABASE_URL",
            f"postgresql+asyncpg://u:p@127.0.0.1:{port_of(database)}/payments",
        )
        with socket.create_connection(("127.0.0.1", port_of(listener))):
            assert ready.main(["broker", "database"]) == 1
            assert "not connected to: database" in capsys.readouterr().out
            with socket.create_connection(("127.0.0.1", port_of(database))):
                assert ready.main(["broker", "database"]) == 0
