"""A throwaway PostgreSQL 15 server for tests and benchmarks: Debian's package, run as the
`postgres` user in a temporary directory on a free loopback port, with `wal_level=logical`.

    python -m tests.servers.postgres              # start one, print its URL, stop on Ctrl-C/SIGTERM
    python -m tests.servers.postgres --port 5499  # on this port (default: a free one)
    python -m tests.servers.postgres --durable    # fsync and full-page writes on (benchmarks)
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.errors

SUPERUSER = "postgres"


class PostgresServerError(RuntimeError):
    """The server could not be installed, started or stopped; the message carries its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *args]
    return args


class PostgresServer:
    """One PostgreSQL cluster. `start()` / `stop()` / `restart()`; databases by `create_database`.

    `fast=True` (the default, for tests) turns off fsync and full-page writes; benchmarks
    should pass `fast=False`. A committed transaction survives `restart()` either way.
    """

    restartable = True

    def __init__(self, *, port: int | None = None, fast: bool = True) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.fast = fast
        self.data_dir: Path | None = None
        self._bin: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def ensure_installed() -> Path:
        """The PostgreSQL bin directory, installing Debian's `postgresql` first if needed."""
        bin_dir = _bin_dir()
        if bin_dir is not None:
            return bin_dir
        if os.geteuid() != 0:
            raise PostgresServerError(
                "PostgreSQL is not installed and only root can install it: "
                "run `apt-get install -y postgresql`"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise PostgresServerError(f"apt-get install postgresql failed:\n{done.stderr}")
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise PostgresServerError(
                "postgresql installed but no initdb under /usr/lib/postgresql"
            )
        return bin_dir

    def _start_watchdog(self) -> None:
        # If this process dies without stopping the server (SIGKILL, a killed pytest run),
        # the watchdog stops it and removes its directory within a second.
        assert self._bin is not None and self.data_dir is not None
        pg_ctl = " ".join(_as_postgres([str(self._bin / "pg_ctl")]))
        script = (
            'while kill -0 "$0" 2>/dev/null; do sleep 1; done; '
            f'{pg_ctl} -D "$1" -m immediate stop >/dev/null 2>&1; rm -rf "$1"'
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script, str(os.getpid()), str(self.data_dir)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> PostgresServer:
        """Create a fresh cluster (first call) and start it; waits until it accepts connections."""
        self._bin = self.ensure_installed()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="sagaway-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.data_dir, SUPERUSER, SUPERUSER)
            self._run(
                [
                    str(self._bin / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", SUPERUSER,
                    "-A", "trust",
                    "-E", "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )  # fmt: skip
            self._start_watchdog()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-c unix_socket_directories={self.data_dir}",
            "-c wal_level=logical",
            "-c max_wal_senders=20",
            "-c max_replication_slots=20",
            "-c max_connections=200",
        ]
        if self.fast:
            # Safe against a crash of PostgreSQL (what restart() does), not of the machine.
            # synchronous_commit stays on: off would lose the last commits on restart().
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._pg_ctl(["-l", str(self.data_dir / "server.log"), "-w", "-t", "60", "start",
                      "-o", " ".join(options)])  # fmt: skip
        return self

    def stop(self, *, remove: bool = True) -> None:
        """Stop at once (no checkpoint); remove the data directory unless `remove=False`."""
        if self.data_dir is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl(["-w", "-t", "60", "-m", "immediate", "stop"], check=False)
        if remove:
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait()
                self._watchdog = None
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def restart(self, *, down_for_s: float = 0.0) -> None:
        """Crash (immediate stop: no checkpoint, clients cut off) and start again on the same
        port and data, after `down_for_s` seconds. Committed data survives; chaos tests use it."""
        self.stop(remove=False)
        if down_for_s:
            threading.Event().wait(down_for_s)
        self.start()

    @property
    def running(self) -> bool:
        return self.data_dir is not None and (self.data_dir / "postmaster.pid").exists()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str, *, template: str | None = None) -> None:
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')

    def drop_database(self, name: str) -> None:
        """Drop `name` even if clients or logical replication slots still hold it."""
        drop_database(self.dsn(), name)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement in autocommit mode and return its rows (if any)."""
        return execute(self.dsn(database), sql)

    def async_url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string (psycopg2, the WAL relay)."""
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={database}"

    # -- plumbing ----------------------------------------------------------------------------

    def _pg_ctl(self, args: list[str], *, check: bool = True) -> str:
        assert self._bin is not None and self.data_dir is not None
        return self._run([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), *args], check=check)

    def _run(self, args: list[str], *, check: bool = True) -> str:
        done = subprocess.run(
            _as_postgres(args), capture_output=True, text=True, cwd="/", timeout=120
        )
        if check and done.returncode != 0:
            log = ""
            if self.data_dir is not None and (self.data_dir / "server.log").exists():
                log = (self.data_dir / "server.log").read_text(errors="replace")[-4000:]
            raise PostgresServerError(
                f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )
        return done.stdout


def execute(dsn: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement through psycopg2 in autocommit mode (CREATE/DROP DATABASE need it)."""
    connection = psycopg2.connect(dsn, connect_timeout=10)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
    finally:
        connection.close()


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name`: stop its walsenders, drop its replication slots, then force-drop."""
    execute(
        admin_dsn,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE database = %s AND active_pid IS NOT NULL",
        (name,),
    )
    for _ in range(50):
        try:
            execute(
                admin_dsn,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = %s",
                (name,),
            )
            break
        except psycopg2.errors.ObjectInUse:
            time.sleep(0.05)  # the walsender is still exiting
    execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run a throwaway PostgreSQL server on 127.0.0.1 (wal_level=logical) until "
        "interrupted; prints its URL."
    )
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--durable", action="store_true", help="keep fsync and full-page writes on"
    )
    args = parser.parse_args(argv)
    server = PostgresServer(port=args.port, fast=not args.durable)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    try:
        print(server.async_url(), flush=True)
        print(f"# dsn: {server.dsn()}  data: {server.data_dir}  (Ctrl-C stops it)", flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
