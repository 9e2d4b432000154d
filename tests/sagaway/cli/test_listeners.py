"""A role that cannot take one of its ports stops at once, naming the port and the setting to
change, instead of running half-started: two gateways, or two relays, on one host with the same
metrics port."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from console.auth import hash_password
from sagaway.settings.composed import Settings
from sagaway.settings.console import ConsoleUser
from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.harness.processes import RoleProcess, settings_environment, wait_until_ready
from tests.harness.waiting import eventually_sync
from tests.servers.tansu import free_port

pytestmark = pytest.mark.timeout(120)


def role(
    name: str, args: list[str], settings: Settings, tmp_path: Path, **extra: object
) -> RoleProcess:
    env = settings_environment(settings, **extra)
    return RoleProcess(name, args, env, tmp_path / f"{name}.log", tmp_path)


def exit_code(process: RoleProcess, timeout_s: float = 60) -> int:
    """The exit code of a role expected to stop by itself; a role still running fails the test."""
    assert process.process is not None
    try:
        return process.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{process.name} is still running:\n{process.log_tail()}") from None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tuned_settings(tmp_path / "data", relay_poll_interval_ms=10)


def test_a_second_gateway_on_the_same_metrics_port_stops_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    upgrade(settings.storage.database_url_for("gateway"))
    metrics = free_port()
    first_port, second_port = free_port(), free_port()
    first = role(
        "gateway-1",
        ["gateway", "--port", str(first_port), "--internal-port", str(metrics)],
        settings, tmp_path,
    ).start()
    second = role(
        "gateway-2",
        ["gateway", "--port", str(second_port), "--internal-port", str(metrics)],
        settings, tmp_path,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{metrics}/metrics", process=first.process,
                         log_tail=first.log_tail)
        second.start()

        assert exit_code(second) == 1
        assert (
            f"Error: cannot listen on 127.0.0.1:{metrics} for the gateway's /metrics: the port is "
            "already in use (another process, or another instance on this host); set "
            "--internal-port or SAGAWAY_GATEWAY_INTERNAL_PORT (0 = no /metrics) to a free port"
        ) in second.output()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{second_port}/readyz", timeout=2)
        assert first.alive
    finally:
        second.stop()
        first.stop()


def test_a_gateway_on_port_0_takes_a_free_port_and_prints_it(
    settings: Settings, tmp_path: Path
) -> None:
    upgrade(settings.storage.database_url_for("gateway"))
    gateway = role("gateway", ["gateway", "--port", "0", "--internal-port", "0"], settings,
                   tmp_path).start()
    try:
        def printed() -> str | None:
            for line in gateway.output().splitlines():
                if " on http://127.0.0.1:" in line:
                    return line.rsplit(":", 1)[1]
            return None

        port = eventually_sync(printed, timeout_s=60, what=gateway.log_tail)
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", process=gateway.process,
                         log_tail=gateway.log_tail)
    finally:
        gateway.stop()


def test_a_second_relay_on_the_same_metrics_port_stops_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    upgrade(settings.storage.database_url_for("payments"))
    metrics = free_port()
    first = role("relay-1", ["relay", "--service", "payments"], settings, tmp_path,
                 relay_metrics_port=metrics).start()
    second = role("relay-2", ["relay", "--service", "payments"], settings, tmp_path,
                  relay_metrics_port=metrics)
    try:
        wait_until_ready(f"http://127.0.0.1:{metrics}/metrics", process=first.process,
                         log_tail=first.log_tail)
        second.start()

        assert exit_code(second) == 1
        assert (
            f"Error: cannot listen on 0.0.0.0:{metrics} for the payments relay metrics: the port "
            "is already in use (another process, or another instance on this host); set "
            "SAGAWAY_RELAY_METRICS_PORT to a free port"
        ) in second.output()
        assert "Traceback" not in second.output()
        assert first.alive
    finally:
        second.stop()
        first.stop()


def test_an_orchestrator_whose_metrics_port_is_taken_stops_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    with socket_on(port := free_port()):
        orchestrator = role("orchestrator", ["orchestrator"], settings, tmp_path,
                            metrics_port=port).start()

        assert exit_code(orchestrator) == 1
    assert (
        f"cannot listen on 0.0.0.0:{port} for the orchestrator metrics: the port is already in "
        "use (another process, or another instance on this host); set SAGAWAY_METRICS_PORT to a "
        "free port"
    ) in orchestrator.output()


def socket_on(port: int) -> socket.socket:
    """A listening socket on every interface at `port`, as another process would hold it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", port))
    sock.listen()
    return sock


def test_a_console_whose_port_is_taken_stops_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    user = ConsoleUser(name="olga", role="operator", password_hash=hash_password("pw-123456789"))
    users = orjson.dumps([user.model_dump()]).decode()
    with socket_on(port := free_port()):
        console = role("console", ["console", "--port", str(port)], settings, tmp_path,
                       console__users=users).start()

        assert exit_code(console) == 1
    assert (
        f"Error: cannot listen on 127.0.0.1:{port} for the console: the port is already in use "
        "(another process, or another instance on this host); set --port or "
        "SAGAWAY_CONSOLE__PORT to a free port"
    ) in console.output()
