"""Reading docker/ the way Compose and Docker would, for the structural tests of tests/docker:
the compose files with their variables at their defaults, the services' commands, environments and
dependencies, and the Dockerfile's instructions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from sagaway.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"

SERVICE_DATABASES = {"orchestrator", "gateway", "inventory", "payments", "shipping"}
PARTICIPANTS = {"inventory", "payments", "shipping"}
ROLE_VERBS = {"migrate", "relay", "orchestrator", "gateway", "participant", "console"}
TOOL_VERBS = {"seed", "audit"}


class UnresolvedVariable(ValueError):
    """The compose file uses ${NAME} without a default: `up` would fail on a fresh checkout."""


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(text: str) -> str:
    """What Compose makes of `text` when no variable is set: `${X:-d}` → d, `$$` → `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("default") is None:
            raise UnresolvedVariable(f"${{{match.group('name')}}} has no default in {text!r}")
        return match.group("default")

    return _VARIABLE.sub(replace, text)


def interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, dict):
        return {key: interpolated(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value) for value in node]
    return node


def sagaway_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the Sagaway image (they have a `command` of sagaway verbs)."""
    return {name: spec for name, spec in services.items() if "build" in spec}


def command_of(spec: dict[str, Any]) -> list[str]:
    command = spec.get("command")
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command), (
        f"command must be a list of strings (exec form), got {command!r}"
    )
    return command


def environment_of(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {key: "" if value is None else str(value) for key, value in env.items()}


def option_value(args: list[str], option: str) -> str | None:
    return args[args.index(option) + 1] if option in args else None


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def resolve_verb(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The click command `args` invoke (descending into groups), its path and its own args."""
    command: click.Command = main
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    if command is main:
        raise click.UsageError(f"{args[0] if args else '(nothing)'!r} is not a sagaway verb")
    return command, path, rest


def parse_verb(args: list[str]) -> click.Context:
    """Parse `sagaway <args>` exactly as click would, without running it."""
    command, path, rest = resolve_verb(args)
    return command.make_context(" ".join(["sagaway", *path]), rest)


def databases_used(name: str, spec: dict[str, Any]) -> set[str]:
    """The service databases a container reads or writes."""
    urls = [environment_of(spec).get("SAGAWAY_DATABASE_URL", "")]
    args = command_of(spec)
    urls += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg.endswith("-url")]
    console = environment_of(spec).get("SAGAWAY_CONSOLE")
    if console:
        urls += json.loads(console).get("service_database_urls", {}).values()
    return {database_name(url) for url in urls if url}


def initdb_databases(services: dict[str, dict[str, Any]]) -> set[str]:
    host_dir = None
    for volume in services["postgres"].get("volumes", []):
        source, target = volume.split(":")[:2]
        if target == "/docker-entrypoint-initdb.d":
            host_dir = (DOCKER / source).resolve()
    assert host_dir is not None and host_dir.is_dir(), "no init scripts mounted into postgres"
    sql = "\n".join(path.read_text() for path in sorted(host_dir.glob("*.sql")))
    return set(re.findall(r"^\s*CREATE DATABASE\s+(\w+)\s*;", sql, re.M | re.I))


def depends_on(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = spec.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def load_compose(path: Path) -> dict[str, Any]:
    """A compose file as Compose reads it when no variable is set."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict)
    return dict(interpolated(document))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, rest) of each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def healthcheck_test(spec: dict[str, Any]) -> list[str]:
    """A service's health check command as exec-form arguments (after CMD)."""
    test = spec.get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}, test
    return [str(arg) for arg in test[1:]]
