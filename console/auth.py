"""Who is logged in to the console: users and roles from the settings, argon2 password hashes,
and the session (a signed, HTTP-only cookie) that remembers the login."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.requests import Request

from sagaway.settings import ConsoleUser

VIEWER, OPERATOR = "viewer", "operator"
SESSION_USER, SESSION_ROLE = "user", "role"

_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class ConsoleConfigError(ValueError):
    """The console's settings cannot work (a user without a usable password hash, two users of
    one name)."""


class NotAuthenticated(Exception):
    """No valid session: the browser is sent to the login form."""


class Forbidden(Exception):
    """Logged in, but the role does not allow this (a viewer trying to act)."""


@dataclass(frozen=True, slots=True)
class SessionUser:
    name: str
    role: str

    @property
    def may_act(self) -> bool:
        return self.role == OPERATOR


def hash_password(password: str) -> str:
    """An argon2id hash for `[[console.users]] password_hash`."""
    return _hasher.hash(password)


class UserDirectory:
    """The configured users, checked once at start-up."""

    def __init__(self, users: list[ConsoleUser]) -> None:
        self._users: dict[str, ConsoleUser] = {}
        for user in users:
            if user.name in self._users:
                raise ConsoleConfigError(f"console user {user.name!r} is configured twice")
            if not user.password_hash.startswith("$argon2"):
                raise ConsoleConfigError(
                    f"console user {user.name!r}: password_hash is not an argon2 hash "
                    "(make one with `sagaway console --hash-password`)"
                )
            self._users[user.name] = user

    def __len__(self) -> int:
        return len(self._users)

    def authenticate(self, name: str, password: str) -> SessionUser | None:
        """The user if `password` is theirs, else None (same cost whether or not `name` exists)."""
        user = self._users.get(name)
        try:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        return SessionUser(user.name, user.role)

    def still_valid(self, name: str, role: str) -> SessionUser | None:
        """A session names a user who still exists with that role (a removed user is logged out)."""
        user = self._users.get(name)
        if user is None or user.role != role:
            return None
        return SessionUser(user.name, user.role)


def dev_operator(name: str = "admin") -> tuple[ConsoleUser, str]:
    """A freshly generated operator for `sagaway dev`, and its password to print."""
    password = secrets.token_urlsafe(12)
    return ConsoleUser(name=name, role="operator", password_hash=hash_password(password)), password


def log_in(request: Request, user: SessionUser) -> None:
    # A new session on login: nothing from before (a planted CSRF token) carries over.
    request.session.clear()
    request.session[SESSION_USER] = user.name
    request.session[SESSION_ROLE] = user.role


def log_out(request: Request) -> None:
    request.session.clear()


def current_user(request: Request) -> SessionUser | None:
    name, role = request.session.get(SESSION_USER), request.session.get(SESSION_ROLE)
    if not isinstance(name, str) or not isinstance(role, str):
        return None
    directory: UserDirectory = request.app.state.users
    return directory.still_valid(name, role)


def require_user(request: Request) -> SessionUser:
    user = current_user(request)
    if user is None:
        raise NotAuthenticated()
    return user


def require_operator(request: Request) -> SessionUser:
    user = require_user(request)
    if not user.may_act:
        raise Forbidden(f"{user.name} is a {user.role}; only an operator may do this")
    return user
