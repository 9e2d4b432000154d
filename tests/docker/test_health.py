"""The compose file's health checks mean "ready to work" and the roles wait on them; the file is
one that Compose v1 (Debian's docker-compose 1.29) accepts as well as v2."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.docker.compose_file import (
    COMPOSE_FILE,
    DOCKER,
    PARTICIPANTS,
    command_of,
    depends_on,
    healthcheck_test,
    option_value,
    sagaway_services,
)

# Compose v1's schema (3.x files) takes these top-level keys, and extensions (x-...).
V1_TOP_LEVEL = {"version", "services", "volumes", "networks", "secrets", "configs"}
READY_PROBE = "/etc/sagaway/ready.py"


def long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that keep running: neither one-shot jobs nor on-demand tools."""
    return {
        name: spec
        for name, spec in services.items()
        if spec.get("restart") != "no" and not spec.get("profiles")
    }


def test_the_file_has_only_top_level_keys_compose_v1_accepts(compose: dict[str, Any]) -> None:
    unknown = {key for key in compose if key not in V1_TOP_LEVEL and not key.startswith("x-")}
    assert not unknown, f"docker-compose 1.29 rejects top-level {sorted(unknown)}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose (v1)")
def test_docker_compose_v1_accepts_the_file_and_the_stand_ins() -> None:
    for files in (["compose.yaml"], ["compose.yaml", "stand-ins/compose.yaml"]):
        args = [arg for name in files for arg in ("-f", str(DOCKER / name))]
        checked = subprocess.run(
            ["docker-compose", "-p", "check", *args, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stderr


def test_every_long_running_service_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in long_running(services).items():
        assert healthcheck_test(spec), f"{name} has no health check: it would only ever be Up"


def test_http_roles_are_checked_on_their_own_listener(services: dict[str, dict[str, Any]]) -> None:
    # The gateway serves /readyz (its broker and database answer); the console serves no
    # /readyz, and its login page is rendered once it is ready to take a login.
    paths = {"gateway": "/readyz", "console": "/login"}
    for name, spec in sagaway_services(services).items():
        verb = command_of(spec)[0]
        if verb not in paths:
            continue
        probe = " ".join(healthcheck_test(spec))
        [url] = [word.strip("'\"();,") for word in probe.split("'") if "://" in word]
        parts = urlsplit(url)
        assert parts.path == paths[verb], f"{name}: checks {parts.path}"
        assert parts.hostname == "127.0.0.1", f"{name}: a check runs inside the container"
        assert str(parts.port) == option_value(command_of(spec), "--port"), name


def test_roles_without_a_listener_are_checked_by_the_ready_probe(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {"relay": ["broker", "database"], "orchestrator": ["broker"]}
    expected["participant"] = ["broker"]
    probe = (DOCKER / "ready.py").resolve()
    for name, spec in sagaway_services(services).items():
        verb = command_of(spec)[0]
        if verb not in expected or name not in long_running(services):
            continue
        test = healthcheck_test(spec)
        assert test[:2] == ["python", READY_PROBE], f"{name}: {test}"
        assert test[2:] == expected[verb], f"{name}: {test}"
        mounted = {
            volume.split(":")[1]: (DOCKER / volume.split(":")[0]).resolve()
            for volume in spec.get("volumes", [])
        }
        assert mounted.get(READY_PROBE) == probe, f"{name}: {READY_PROBE} is not mounted"


def test_each_role_waits_for_the_relay_of_its_outbox(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in sagaway_services(services).items():
        args = command_of(spec)
        if args[0] == "orchestrator":
            own = "orchestrator"
        elif args[0] == "participant":
            own = args[1]
        elif args[0] == "gateway":
            own = "gateway"
        else:
            continue
        relay = f"relay-{own}"
        assert command_of(services[relay])[:3] == ["relay", "--service", own]
        assert depends_on(spec).get(relay, {}).get("condition") == "service_healthy", name


def test_the_gateway_is_ready_only_when_a_saga_can_run(
    services: dict[str, dict[str, Any]],
) -> None:
    deps = depends_on(services["gateway"])
    for role in {"orchestrator", *PARTICIPANTS}:
        assert deps.get(role, {}).get("condition") == "service_healthy", role


def test_readme_states_how_to_run_without_registry_access() -> None:
    readme = (DOCKER / "README.md").read_text()
    assert "docker/smoke" in readme
    assert "stand-ins/compose.yaml" in readme
    assert "docker-compose" in readme, "the README does not say which Compose versions work"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "name" not in raw
