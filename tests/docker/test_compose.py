"""The compose deployment (docker/compose.yaml) checked against the code it runs, statically: every
verb, option, setting, database and dependency it names (tests/docker/test_dockerfile.py checks
the image, test_health.py the health checks, docker/smoke runs it all on a Docker engine)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner

from examples.place_order import EXAMPLE_NAMES
from examples.place_order.settings import ShippingSettings
from orchestrator.registry import load_registry
from sagaway.cli.application import application
from sagaway.cli.main import main
from sagaway.settings import CONFIG_FILE_VARIABLE, ConsoleSettings
from sagaway.settings.composed import COMPONENTS, Settings
from tests.docker.compose_file import (
    DOCKER,
    DOCKERFILE,
    PARTICIPANTS,
    ROLE_VERBS,
    SERVICE_DATABASES,
    TOOL_VERBS,
    UnresolvedVariable,
    command_of,
    database_name,
    databases_used,
    depends_on,
    environment_of,
    initdb_databases,
    interpolate,
    option_value,
    parse_verb,
    resolve_verb,
    sagaway_services,
)

# ------------------------------------------------------------------ the helpers themselves


def test_interpolation_uses_defaults_and_rejects_a_variable_without_one() -> None:
    assert interpolate("a ${X:-b} ${Y-c} $$d") == "a b c $d"
    with pytest.raises(UnresolvedVariable):
        interpolate("${POSTGRES_PASSWORD}")


def test_verb_check_rejects_unknown_verbs_and_options() -> None:
    with pytest.raises(click.UsageError):
        parse_verb(["no-such-verb"])
    with pytest.raises(click.NoSuchOption):
        parse_verb(["relay", "--servce", "inventory"])
    with pytest.raises(click.UsageError):
        parse_verb(["participant"])  # NAME is required


# ------------------------------------------------------------------ infrastructure


def test_kafka_runs_kraft_from_the_apache_image_without_zookeeper(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    listeners = dict(listener.split("://", 1) for listener in env["KAFKA_LISTENERS"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    voter_id, voter_address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == node_id
    assert voter_address.split(":")[1] == listeners[controller].rsplit(":", 1)[1]
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(pair.split(":") for pair in protocol_map.split(","))
    assert set(listeners) <= set(protocols)
    # CLUSTER_ID formats the log directory: a base64url UUID (16 bytes).
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    everything = yaml.safe_dump(services).lower()
    assert "zookeeper" not in everything


def test_every_role_bootstraps_from_an_advertised_kafka_listener(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment_of(services["kafka"])
    advertised = {
        listener.split("://", 1)[1] for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name, spec in sagaway_services(services).items():
        bootstrap = environment_of(spec).get("SAGAWAY_KAFKA_BOOTSTRAP")
        assert bootstrap, f"{name} lacks SAGAWAY_KAFKA_BOOTSTRAP (so uses the embedded broker)"
        assert set(bootstrap.split(",")) <= advertised, name


def test_postgres_runs_with_logical_wal_and_room_for_every_relay(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:1[56](\..*)?(-.*)?", postgres["image"])
    command = postgres["command"]
    args = command.split() if isinstance(command, str) else command
    assert args[0] == "postgres"
    settings = dict(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "-c")
    assert settings["wal_level"] == "logical"
    relays = [n for n, s in sagaway_services(services).items() if command_of(s)[0] == "relay"]
    assert int(settings["max_replication_slots"]) >= len(relays)
    assert int(settings["max_wal_senders"]) >= len(relays)


def test_init_script_creates_every_service_database(services: dict[str, dict[str, Any]]) -> None:
    assert initdb_databases(services) == SERVICE_DATABASES


def test_infrastructure_has_healthchecks_the_roles_wait_for(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("kafka", "postgres"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, spec in services.items():
        for dependency in ("kafka", "postgres"):
            if dependency in depends_on(spec):
                assert depends_on(spec)[dependency]["condition"] == "service_healthy", name


# ------------------------------------------------------------------ the Sagaway containers


def test_every_role_is_a_service_built_from_the_one_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    built = sagaway_services(services)
    builds = {
        (spec["build"]["context"], spec["build"]["dockerfile"], spec.get("image"))
        for spec in built.values()
    }
    assert len(builds) == 1, f"several images are built: {builds}"
    context, dockerfile, image = builds.pop()
    assert (DOCKER / context / dockerfile).resolve() == DOCKERFILE
    assert image, "the built image is tagged, so compose builds it once for every service"
    verbs = {command_of(spec)[0] for spec in built.values()}
    assert ROLE_VERBS | TOOL_VERBS <= verbs
    participants = {
        command_of(spec)[1] for spec in built.values() if command_of(spec)[0] == "participant"
    }
    assert participants == PARTICIPANTS
    for name, spec in services.items():
        if name not in built:
            assert "build" not in spec and spec["image"].split(":")[0] in {
                "apache/kafka",
                "postgres",
            }, f"{name} runs neither the Sagaway image nor the infrastructure"


def test_every_command_is_a_sagaway_verb_that_accepts_its_options(
    services: dict[str, dict[str, Any]],
) -> None:
    assert ROLE_VERBS | TOOL_VERBS <= set(main.commands), (
        "verbs missing from the CLI: "
        + ", ".join(sorted(ROLE_VERBS | TOOL_VERBS - set(main.commands)))
    )
    runner = CliRunner()
    for name, spec in sagaway_services(services).items():
        args = command_of(spec)
        try:
            parse_verb(args)
        except click.ClickException as exc:
            pytest.fail(
                f"{name}: `sagaway {' '.join(args)}` fails to parse: {exc.format_message()}"
            )
        _, path, rest = resolve_verb(args)
        shown = runner.invoke(main, [*path, "--help"], env={CONFIG_FILE_VARIABLE: ""})
        assert shown.exit_code == 0, shown.output
        for option in (arg.split("=")[0] for arg in rest if arg.startswith("--")):
            assert option in shown.output, f"{name}: {option} not in `sagaway {path[0]} --help`"
        if args[0] == "participant":
            assert args[1] in EXAMPLE_NAMES


def test_sagaway_environment_names_only_real_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    fields = {name for model in COMPONENTS.values() for name in model.model_fields}
    fields |= {"console"} | set(ShippingSettings.model_fields)
    for name, spec in sagaway_services(services).items():
        for key, value in environment_of(spec).items():
            if not key.startswith("SAGAWAY_") or key == CONFIG_FILE_VARIABLE:
                continue
            field = key.removeprefix("SAGAWAY_").lower()
            assert field in fields, f"{name}: {key} is not a setting ({field})"
            if field == "console":
                unknown = set(json.loads(value)) - set(ConsoleSettings.model_fields)
                assert not unknown, f"{name}: SAGAWAY_CONSOLE has unknown keys {unknown}"


def _host_path(spec: dict[str, Any], container_path: str) -> Path | None:
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if target == container_path:
            return (DOCKER / source).resolve()
    return None


@contextlib.contextmanager
def container_settings(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The Settings a container's process would load: its environment plus the mounted TOML."""
    with monkeypatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("SAGAWAY_")]:
            patch.delenv(key)
        for key, value in environment_of(spec).items():
            if key == CONFIG_FILE_VARIABLE:
                host = _host_path(spec, value)
                assert host is not None and host.is_file(), f"{value} is not mounted from a file"
                value = str(host)
            patch.setenv(key, value)
        yield application(Settings())


def test_each_container_loads_valid_settings_for_kafka_and_postgres(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, spec in sagaway_services(services).items():
        with container_settings(spec, monkeypatch) as settings:
            assert not settings.messaging.embedded, name
            if "SAGAWAY_DATABASE_URL" in environment_of(spec):
                assert settings.storage.database_url is not None
                assert settings.storage.database_url.startswith("postgresql+asyncpg://"), name
            if name in {"orchestrator", "gateway", "console"}:
                registry = load_registry(settings.orchestrator.sagas or [])
                assert len(registry), f"{name} loads no saga (SAGAWAY_SAGAS)"
                for route in settings.gateway.routes:
                    assert route.saga in {d.saga_type for d in registry}, route
            if name == "console":
                assert settings.console.users, "the console has no [[console.users]]"


def test_every_database_url_points_at_a_created_database_with_the_postgres_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    created = initdb_databases(services)
    postgres_env = environment_of(services["postgres"])
    for name, spec in sagaway_services(services).items():
        args = command_of(spec)
        urls = [environment_of(spec).get("SAGAWAY_DATABASE_URL")]
        urls += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg.endswith("-url")]
        console = environment_of(spec).get("SAGAWAY_CONSOLE")
        if console:
            urls += json.loads(console)["service_database_urls"].values()
        for url in filter(None, urls):
            parts = urlsplit(url)
            assert parts.scheme == "postgresql+asyncpg", (name, url)
            assert parts.hostname == "postgres" and (parts.port or 5432) == 5432, (name, url)
            assert parts.username == postgres_env["POSTGRES_USER"], (name, url)
            assert parts.password == postgres_env["POSTGRES_PASSWORD"], (name, url)
            assert database_name(url) in created, (name, url)


def test_each_role_uses_its_own_service_database(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in sagaway_services(services).items():
        args = command_of(spec)
        env = environment_of(spec)
        verb = args[0]
        if verb == "migrate":
            own = option_value(args, "--service")
            assert database_name(option_value(args, "--database-url") or "") == own, name
        elif verb == "relay":
            own = option_value(args, "--service")
            assert database_name(env["SAGAWAY_DATABASE_URL"]) == own, name
        elif verb == "participant":
            assert database_name(env["SAGAWAY_DATABASE_URL"]) == args[1], name
        elif verb in {"orchestrator", "gateway"}:
            assert database_name(env["SAGAWAY_DATABASE_URL"]) == verb, name
        elif verb == "console":
            assert database_name(env["SAGAWAY_DATABASE_URL"]) == "orchestrator"
            urls = json.loads(env["SAGAWAY_CONSOLE"])["service_database_urls"]
            assert {service: database_name(url) for service, url in urls.items()} == {
                service: service for service in SERVICE_DATABASES
            }
        elif verb in {"seed", "audit"}:
            for option in (f"--{service}-url" for service in SERVICE_DATABASES):
                url = option_value(args, option)
                if url is not None:
                    assert database_name(url) == option[2:].removesuffix("-url"), (name, option)


def test_every_service_database_is_migrated_once_and_relayed_by_one_relay(
    services: dict[str, dict[str, Any]],
) -> None:
    migrated: list[str] = []
    relayed: list[str] = []
    for spec in sagaway_services(services).values():
        args = command_of(spec)
        if args[0] == "migrate":
            migrated.append(option_value(args, "--service") or "orchestrator")
        if args[0] == "relay":
            relayed.append(option_value(args, "--service") or "orchestrator")
            assert int(spec.get("deploy", {}).get("replicas", 1)) == 1
    assert sorted(migrated) == sorted(SERVICE_DATABASES)
    assert sorted(relayed) == sorted(SERVICE_DATABASES)
    # The relays run apart, so no role runs a second (standby) relay of the same slot.
    for name, spec in sagaway_services(services).items():
        args = command_of(spec)
        if args[0] == "participant":
            assert "--no-relay" in args, name
        if args[0] == "orchestrator":
            assert "--with-relay" not in args, name
        if args[0] == "gateway":
            assert environment_of(spec)["SAGAWAY_GATEWAY_RUN_RELAY"] == "false", name


def test_roles_start_only_after_their_databases_are_migrated(
    services: dict[str, dict[str, Any]],
) -> None:
    migration_of = {
        option_value(command_of(spec), "--service"): name
        for name, spec in sagaway_services(services).items()
        if command_of(spec)[0] == "migrate"
    }
    for name, spec in sagaway_services(services).items():
        deps = depends_on(spec)
        if command_of(spec)[0] == "migrate":
            assert deps["postgres"]["condition"] == "service_healthy", name
            assert spec.get("restart") == "no", f"{name} is one-shot; it must not be restarted"
            continue
        for database in databases_used(name, spec):
            migration = migration_of[database]
            assert deps.get(migration, {}).get("condition") == "service_completed_successfully", (
                f"{name} uses the {database} database but does not wait for {migration}"
            )
        if command_of(spec)[0] in ROLE_VERBS:
            assert deps["kafka"]["condition"] == "service_healthy", name


def test_depends_on_names_existing_services_without_cycles(
    services: dict[str, dict[str, Any]],
) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, spec in services.items():
        for dependency, how in depends_on(spec).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert how.get("condition", "service_started") in conditions
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "depends_on cycle: " + " → ".join([*trail, name])
        state[name] = "open"
        for dependency in depends_on(services[name]):
            visit(dependency, [*trail, name])
        state[name] = "done"

    for name in services:
        visit(name, [])


def _published(spec: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    for port in spec.get("ports", []):
        parts = str(port).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        yield host_ip, int(parts[-2]), int(parts[-1])


def test_published_ports_do_not_collide_and_reach_the_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    seen: dict[int, str] = {}
    for name, spec in services.items():
        for _host_ip, host_port, container_port in _published(spec):
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish {host_port}"
            seen[host_port] = name
            # A fixed host port cannot be shared by replicas.
            assert int(spec.get("deploy", {}).get("replicas", 1)) == 1, name
            args = command_of(spec)
            assert option_value(args, "--port") == str(container_port), name
            assert option_value(args, "--host") == "0.0.0.0", f"{name} must listen beyond loopback"
    assert seen.get(8000) == "gateway"
    assert seen.get(8001) == "console"


def test_the_orchestrator_runs_two_replicas_in_one_consumer_group(
    services: dict[str, dict[str, Any]],
) -> None:
    orchestrator = services["orchestrator"]
    assert command_of(orchestrator)[0] == "orchestrator"
    assert int(orchestrator["deploy"]["replicas"]) == 2
    assert "container_name" not in orchestrator


def test_tools_run_on_demand_only(services: dict[str, dict[str, Any]]) -> None:
    for name in ("seed", "audit"):
        assert services[name].get("profiles"), f"{name} would run on every `up`"
        assert services[name].get("restart") == "no"


def test_the_config_file_is_mounted_into_every_sagaway_container(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in sagaway_services(services).items():
        path = environment_of(spec).get(CONFIG_FILE_VARIABLE)
        assert path, f"{name} does not read the TOML file"
        host = _host_path(spec, path)
        assert host == (DOCKER / "sagaway.toml").resolve(), name
    tomllib.loads((DOCKER / "sagaway.toml").read_text())


# ------------------------------------------------------------------ the README


def test_readme_commands_name_real_services_and_verbs(services: dict[str, dict[str, Any]]) -> None:
    readme = (DOCKER / "README.md").read_text()
    assert "docker compose" in readme
    named = re.findall(
        r"docker compose (?:-f \S+ )?(?:run --rm|exec|logs(?: -f)?|restart|stop|up -d)"
        r" ([a-z][\w-]*)",
        readme,
    )
    assert named, "the README shows no command against a service"
    for service in named:
        assert service in services, f"README names unknown service {service}"
    code = "\n".join(
        re.findall(r"```[a-z]*\n(.*?)```", readme, re.S) + re.findall(r"`([^`\n]+)`", readme)
    )
    for verb in re.findall(r"(?:^|[\s$`])sagaway ([a-z][\w-]*)", code, re.M):
        assert verb in main.commands, f"the README names an unknown verb: sagaway {verb}"
