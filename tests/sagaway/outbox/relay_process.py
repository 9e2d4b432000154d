"""`sagaway relay` as a real process (a harness role process), so tests can kill -9 it."""

from __future__ import annotations

from pathlib import Path

from sagaway.settings.composed import Settings
from tests.harness.processes import RoleProcess, settings_environment


def start_relay(
    settings: Settings, database_url: str, service: str, log_path: Path, *args: str
) -> RoleProcess:
    """`sagaway relay --service SERVICE ARGS` on `database_url`, with the test's settings."""
    env = settings_environment(settings.replace(database_url=database_url))
    return RoleProcess(
        "relay", ["relay", "--service", service, *args], env, log_path, log_path.parent
    ).start()
