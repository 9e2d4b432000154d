"""`sagaway console-user`: a console user for SAGAWAY_CONSOLE__USERS from a password on stdin,
which the console then accepts."""

from __future__ import annotations

import subprocess

import orjson

from console.auth import UserDirectory
from sagaway.settings.console import ConsoleSettings
from tests.harness.processes import SAGAWAY, base_environment


def console_user(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SAGAWAY, "console-user", *args], input=stdin, capture_output=True,
        env=base_environment(), timeout=60, check=False,
    )


def test_a_user_from_stdin_is_what_the_console_settings_take_and_its_password_verifies() -> None:
    done = console_user("olga", "--role", "operator", stdin=b"s3cret pass\n")

    assert done.returncode == 0, done.stderr
    users = orjson.loads(done.stdout)
    settings = ConsoleSettings.model_validate({"users": users})
    (user,) = settings.users
    assert (user.name, user.role) == ("olga", "operator")
    directory = UserDirectory(settings.users)
    assert directory.authenticate("olga", "s3cret pass") is not None
    assert directory.authenticate("olga", "wrong") is None


def test_no_password_or_a_bad_role_is_refused_with_a_message() -> None:
    empty = console_user("olga", stdin=b"")
    assert empty.returncode == 1
    assert b"no password on standard input" in empty.stderr

    bad_role = console_user("olga", "--role", "root", stdin=b"pw\n")
    assert bad_role.returncode == 2
    assert b"'root' is not one of 'viewer', 'operator'" in bad_role.stderr
