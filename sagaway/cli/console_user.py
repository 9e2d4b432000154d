"""`sagaway console-user NAME`: one console user as `SAGAWAY_CONSOLE__USERS` takes it.

    printf '%s' "$PASSWORD" | sagaway console-user admin --role operator
    [{"name": "admin", "role": "operator", "password_hash": "$argon2id$..."}]

The password comes from standard input when it is not a terminal (so a pasted script is not
stopped by a prompt), otherwise from a prompt that asks twice.
"""

from __future__ import annotations

import sys

import click
import orjson
from pydantic import ValidationError

from console.auth import hash_password
from sagaway.settings.console import ConsoleUser


def _read_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("no password on standard input")
    return password


@click.command("console-user")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator"]),
    default="viewer",
    show_default=True,
    help="viewer reads every page; operator may also act.",
)
def console_user_command(name: str, role: str) -> None:
    """Print a console user (NAME, ROLE, the argon2 hash of a password read from standard input
    or a prompt) as the JSON list SAGAWAY_CONSOLE__USERS takes."""
    password = _read_password()
    try:
        user = ConsoleUser.model_validate(
            {"name": name, "role": role, "password_hash": hash_password(password)}
        )
    except ValidationError as exc:
        raise click.ClickException(f"not a valid console user: {exc}") from None
    sys.stdout.buffer.write(orjson.dumps([user.model_dump()]) + b"\n")
    sys.stdout.flush()
