"""The data dir of `sagaway dev`: the files it keeps there (a SQLite database per service, the
broker, the console login), the lock that keeps a second `sagaway dev` out, and --reset."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sagaway.dev import DevError
from sagaway.dev.participants import PARTICIPANTS
from sagaway.messaging.embedded.crossbell import bells_dir
from sagaway.settings import StorageSettings
from sagaway.storage.migrate import current_revision, head_revision, upgrade

log = logging.getLogger("sagaway.dev")

SERVICES = ("orchestrator", "gateway", *PARTICIPANTS)
CREDENTIALS_FILE = "console-credentials"
LOCK_FILE = "dev.lock"
DEFAULT_OPERATOR = "admin"


def data_files(data_dir: Path) -> list[Path]:
    """The files `sagaway dev` creates in data_dir (those that exist)."""
    names = [CREDENTIALS_FILE, LOCK_FILE]
    for service in (*SERVICES, "broker"):
        names += [f"{service}.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
    return [data_dir / name for name in names if (data_dir / name).exists()]


def reset_data_dir(data_dir: Path) -> list[Path]:
    """Delete what `sagaway dev` keeps in data_dir, and nothing else: only the files it creates
    are removed (never a directory tree), and not while another `sagaway dev` uses them.
    Returns the files deleted; the directory itself goes only when that leaves it empty."""
    data_dir = data_dir.expanduser().resolve()
    if not data_dir.exists():
        return []
    if not data_dir.is_dir():
        raise DevError(f"--reset: {data_dir} is not a directory")
    with DataDirLock(data_dir):
        removed = [path for path in data_files(data_dir) if path.name != LOCK_FILE]
        bells = bells_dir(data_dir / "broker.db")  # the broker's wake-up sockets
        if bells.is_dir():
            removed += sorted(bells.glob("*.sock"))
        for path in removed:
            path.unlink()
        with contextlib.suppress(OSError):
            bells.rmdir()
    (data_dir / LOCK_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        data_dir.rmdir()  # only if empty: anything else the user put there stays
    return removed


class DataDirLock:
    """An exclusive lock on data_dir for the life of the process: two `sagaway dev` on one data
    dir would both relay the same outboxes. The OS drops it when the process dies, even kill -9."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DevError(
                f"{self.path.parent} is in use by another `sagaway dev` (pid {holder}); stop it "
                "first, or give this one its own --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class DevCredentials:
    """The console login `sagaway dev` made, kept in data_dir so a restart keeps it."""

    user: str
    password: str
    session_secret: str
    path: Path
    created: bool


def dev_credentials(data_dir: Path) -> DevCredentials:
    """Read data_dir/console-credentials, or create it (owner-only) with a random password."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        try:
            stored = tomllib.loads(path.read_text())
            return DevCredentials(
                str(stored["user"]),
                str(stored["password"]),
                str(stored["session_secret"]),
                path,
                created=False,
            )
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s is unreadable (%s); writing a new one", path, exc)
            path.unlink()
    user, password, secret = DEFAULT_OPERATOR, secrets.token_urlsafe(12), secrets.token_urlsafe(32)
    text = (
        "# The console login `sagaway dev` created; delete this file for a new password.\n"
        f'user = "{user}"\npassword = "{password}"\nsession_secret = "{secret}"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return DevCredentials(user, password, secret, path, created=True)


def migrate_all(settings: StorageSettings) -> list[str]:
    """Bring every service's database to head; returns what changed (empty on a restart)."""
    head = head_revision()
    changed = []
    for service in SERVICES:
        url = settings.database_url_for(service)
        path = settings.data_dir / f"{service}.db"
        if path.exists() and current_revision(url) == head:
            continue
        try:
            changed.append(upgrade(url).summary())
        except Exception as exc:  # noqa: BLE001 - one line saying which file, not a traceback
            raise DevError(
                f"cannot bring {path} to the current schema ({type(exc).__name__}: {exc}); "
                "`sagaway dev --reset` starts afresh"
            ) from exc
    return changed
