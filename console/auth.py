"""Who is logged in to the console: users and roles from the settings, argon2 password hashes,
and the login a request carries (resolved from the server-side session by
console.session_middleware; the signed, HTTP-only cookie holds only the session id and the CSRF
token)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.requests import Request

from console.sessions import credential_of
from sagaway.settings import ConsoleUser

VIEWER, OPERATOR = "viewer", "operator"
# The cookie session's key for the session id; the scope key the resolved user is kept under.
SESSION_ID = "sid"
SCOPE_USER = "sagaway.console_user"

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
    session: str = ""  # the server-side session's handle (console.sessions), once logged in

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

    def credential(self, name: str) -> str | None:
        """A digest of the user's current password hash (None: no such user): a session made
        under another hash is over."""
        user = self._users.get(name)
        return credential_of(user.password_hash) if user else None

    def still_valid(self, name: str, credential: str, session: str) -> SessionUser | None:
        """A session's user if they still exist with the password hash the session was made
        under (a removed user, or a changed password, ends every session); the role is the
        current one."""
        user = self._users.get(name)
        if user is None or credential_of(user.password_hash) != credential:
            return None
        return SessionUser(user.name, user.role, session)


def dev_operator(name: str = "admin") -> tuple[ConsoleUser, str]:
    """A freshly generated operator for `sagaway dev`, and its password to print."""
    password = secrets.token_urlsafe(12)
    return ConsoleUser(name=name, role="operator", password_hash=hash_password(password)), password


def log_in(request: Request, session_id: str) -> None:
    # A new cookie session on login: nothing from before (a planted CSRF token) carries over.
    request.session.clear()
    request.session[SESSION_ID] = session_id


def log_out(request: Request) -> None:
    request.session.clear()


def session_id_of(request: Request) -> str | None:
    value = request.session.get(SESSION_ID)
    return value if isinstance(value, str) else None


def current_user(request: Request) -> SessionUser | None:
    user = request.scope.get(SCOPE_USER)
    return user if isinstance(user, SessionUser) else None


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
