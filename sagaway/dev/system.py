"""`sagaway dev`: the whole system — the example participants, the orchestrator (and its
timers), a polling relay per database, the gateway and the console at /console — on one SQLite
file per service and the embedded broker in `data_dir`, behind ONE HTTP listener. Everything
runs in this process, except (from the CLI, by default) the participants, which run in a second
one to use a second core (dev_participants.py).

Every piece of state lives in those files, so stopping (or killing) the process loses nothing:
the next `sagaway dev` on the same data dir continues the sagas in flight. The composition is
`DevSystem`; `run_dev` adds signals and the banner; the click verb is in dev_command.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shlex
import signal
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import uvicorn
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from gateway.problems import handle_http_exception
from orchestrator.registry import SagaModuleError, load_registry
from sagaway.dev.participants import (
    PARTICIPANTS,
    ParticipantsProcess,
    ParticipantsProcessError,
    start_example_participants,
)
from sagaway.messaging.crossbell import bells_dir
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.transport import Transport
from sagaway.settings import ConsoleUser, Settings
from sagaway.storage.database import connect_database
from sagaway.storage.migrate import current_revision, head_revision, upgrade

log = logging.getLogger("sagaway.dev")

SERVICES = ("orchestrator", "gateway", *PARTICIPANTS)
CONSOLE_PATH = "/console"
CREDENTIALS_FILE = "console-credentials"
LOCK_FILE = "dev.lock"
DEFAULT_OPERATOR = "admin"
# Group membership on the embedded broker expires after session_timeout_ms: after a kill, the
# dead process's members hold their partitions that long. One process owns everything here, so
# a short timeout costs a few heartbeats a second and makes a restart continue within seconds.
DEV_SESSION_TIMEOUT_MS = 3000
DEV_HEARTBEAT_INTERVAL_MS = 500
SHUTDOWN_GRACE_S = 3
# The order the printed curl places: the seeded customer c-1 buys 2 units of sku-1, shipped to FR.
EXAMPLE_ORDER: dict[str, Any] = {
    "customer_id": "c-1",
    "items": [{"sku": "sku-1", "quantity": 2}],
    "total_cents": 2500,
    "country": "FR",
}


class DevError(RuntimeError):
    """`sagaway dev` cannot start as asked (port taken, data dir in use, unsafe reset)."""


# ---------------------------------------------------------------- settings


def dev_settings(settings: Settings, data_dir: Path | None = None) -> Settings:
    """The settings `sagaway dev` runs on: embedded mode in an absolute data_dir, and shorter
    group sessions unless the user chose their own."""
    update: dict[str, Any] = {
        "data_dir": (data_dir or settings.data_dir).expanduser().resolve(),
        "database_url": None,
        "kafka_bootstrap": None,
    }
    chosen = settings.model_fields_set
    heartbeat = (
        settings.heartbeat_interval_ms
        if "heartbeat_interval_ms" in chosen
        else DEV_HEARTBEAT_INTERVAL_MS
    )
    if "session_timeout_ms" not in chosen:
        # A member is dead after a session without heartbeats: keep room for three of them.
        update["session_timeout_ms"] = max(DEV_SESSION_TIMEOUT_MS, 3 * heartbeat)
    if "heartbeat_interval_ms" not in chosen:
        session = update.get("session_timeout_ms", settings.session_timeout_ms)
        update["heartbeat_interval_ms"] = max(1, min(DEV_HEARTBEAT_INTERVAL_MS, session // 3))
    return settings.model_copy(update=update)


def ignored_settings(settings: Settings) -> list[str]:
    """Settings that point at external servers, which `sagaway dev` does not use."""
    return [
        name
        for name, value in (
            ("SAGAWAY_DATABASE_URL", settings.database_url),
            ("SAGAWAY_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
        )
        if value
    ]


# ---------------------------------------------------------------- the data dir


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


def console_settings(settings: Settings, credentials: DevCredentials | None) -> Settings:
    """The console part of the settings under `sagaway dev`: the dev operator when no users are
    configured, a session secret that survives restarts, cookies over plain http on loopback."""
    from console.auth import hash_password

    console = settings.console
    update: dict[str, Any] = {}
    if credentials is not None:
        update["users"] = [
            ConsoleUser(
                name=credentials.user,
                role="operator",
                password_hash=hash_password(credentials.password),
            )
        ]
        if console.session_secret is None:
            update["session_secret"] = SecretStr(credentials.session_secret)
    if "cookie_secure" not in console.model_fields_set:
        update["cookie_secure"] = False
    return settings.model_copy(update={"console": console.model_copy(update=update)})


def migrate_all(settings: Settings) -> list[str]:
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


# ---------------------------------------------------------------- the listener


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind the HTTP port first of all, so a taken port is reported before any work is done."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        hint = " (another `sagaway dev`? choose another with --port)" if in_use else ""
        raise DevError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """Signals are `run_dev`'s: uvicorn's own handlers would re-raise SIGINT after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


# ---------------------------------------------------------------- the system


class DevSystem:
    """Every role on one embedded broker and one listener; on one event loop, or with
    `participants_process` the example participants in a second process (dev_participants.py).

    system = DevSystem(settings, host="127.0.0.1", port=8000)
    await system.start()      # returns once the listener answers
    ...
    await system.stop()       # reverse order; safe after a partial start
    """

    def __init__(
        self, settings: Settings, *, host: str, port: int, participants_process: bool = False
    ) -> None:
        self.settings = dev_settings(settings)
        self.host = host
        self.port = port
        self.participants_process = participants_process
        self.participants: ParticipantsProcess | None = None
        self.credentials: DevCredentials | None = None
        self.auth_enabled = False
        self.migrations: list[str] = []
        self.started_in_s: float | None = None
        self.server: _Server | None = None
        self.app: Starlette | None = None
        self.engines: dict[str, AsyncEngine] = {}
        self.transport: Transport | None = None
        self._stack = contextlib.AsyncExitStack()
        self._serve_task: asyncio.Task[None] | None = None
        self.phases: dict[str, float] = {}
        self._phase_began = 0.0

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    async def start(self) -> None:
        from console.auth import ConsoleConfigError

        began = self._phase_began = time.perf_counter()
        try:
            await self._start()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, ConsoleConfigError | SagaModuleError | OSError):
                raise DevError(f"cannot start: {exc}") from exc
            raise
        self.started_in_s = time.perf_counter() - began

    async def _start(self) -> None:
        stack = self._stack
        listener = bind_listener(self.host, self.port)
        stack.callback(listener.close)
        self.port = listener.getsockname()[1]
        lock = DataDirLock(self.data_dir)
        lock.acquire()
        stack.callback(lock.release)

        if not self.settings.console.users:
            self.credentials = dev_credentials(self.data_dir)
        self.settings = console_settings(self.settings, self.credentials)
        settings = self.settings
        # Configuration mistakes are reported before anything is written.
        from console.auth import UserDirectory

        UserDirectory(settings.console.users)
        registry = load_registry(settings)

        # Alembic narrates every revision at INFO; the summary lines say enough.
        alembic_log = logging.getLogger("alembic")
        alembic_log.setLevel(max(logging.WARNING, logging.getLogger().level))
        self.migrations = await asyncio.to_thread(migrate_all, settings)
        for line in self.migrations:
            log.info(line)
        self._phase("migrate")
        for service in SERVICES:
            engine = await connect_database(settings, service)
            stack.push_async_callback(engine.dispose)
            self.engines[service] = engine
        await self._seed()
        self._phase("seed")

        transport = await connect_transport(settings)
        stack.push_async_callback(transport.close)
        self.transport = transport

        # Consumers before producers: the participants and the orchestrator join their groups
        # before the gateway takes requests (each is durable anyway; this only saves a wait).
        if self.participants_process:
            await self._start_participants_process()
        else:
            await self._start_participants(transport)

        from orchestrator.service import OrchestratorService

        orchestrator = OrchestratorService(
            settings, registry, self.engines["orchestrator"], transport, with_relay=True
        )
        await orchestrator.start()
        stack.push_async_callback(orchestrator.stop)

        from gateway.app import create_gateway_app

        gateway_app = create_gateway_app(
            settings, registry, self.engines["gateway"], transport, manage_lifecycle=False
        )
        gateway = gateway_app.state.gateway
        self.auth_enabled = gateway.auth.enabled
        await gateway.start()
        stack.push_async_callback(gateway.stop)

        from console.app import console_lifespan, create_console_app

        console_app = create_console_app(
            settings,
            registry=registry,
            transport=transport,
            orchestrator_engine=self.engines["orchestrator"],
        )
        await stack.enter_async_context(console_lifespan(console_app))

        self._phase("services")
        self.app = self._compose(gateway_app, console_app, gateway.metrics.render)
        await self._serve(listener)
        self._phase("http")
        log.info(
            "started in %s",
            ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.phases.items()),
        )

    async def _start_participants(self, transport: Transport) -> None:
        await start_example_participants(
            self.settings, self.engines, transport, self._stack, SHUTDOWN_GRACE_S
        )

    async def _start_participants_process(self) -> None:
        try:
            self.participants = ParticipantsProcess(self.settings, SHUTDOWN_GRACE_S)
            await self.participants.start()
        except ParticipantsProcessError as exc:
            raise DevError(f"cannot start: {exc}") from exc
        self._stack.push_async_callback(self.participants.stop)
        # Their relays export outbox lag in the child's registry; /metrics is served here.
        lag = asyncio.create_task(self._export_participant_lag(), name="dev-participant-lag")
        self._stack.push_async_callback(_cancel, lag)

    async def _export_participant_lag(self) -> None:
        from sagaway.outbox.lag import export_lag, measure_lag
        from sagaway.outbox.poll_relay import POLL_RELAY_NAME

        while True:
            for name in PARTICIPANTS:
                try:
                    export_lag(name, await measure_lag(self.engines[name], POLL_RELAY_NAME))
                except Exception as exc:  # noqa: BLE001 - figures are best effort
                    log.warning("could not measure %s's outbox lag: %s", name, exc)
            await asyncio.sleep(max(self.settings.relay_heartbeat_interval_s, 1.0))

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self._phase_began
        self._phase_began = now

    async def _seed(self) -> None:
        from examples.place_order.seed import seed_inventory, seed_payments

        for result in (
            await seed_payments(self.engines["payments"]),
            await seed_inventory(self.engines["inventory"]),
        ):
            if result.added:
                log.info(result.summary())

    @staticmethod
    def _compose(
        gateway_app: Starlette, console_app: Starlette, gateway_metrics: Callable[[], bytes]
    ) -> Starlette:
        async def metrics(request: Request) -> Response:
            # The gateway's own registry, then the process-wide one (orchestrator, relays).
            body = gateway_metrics() + generate_latest(REGISTRY)
            return Response(body, media_type="text/plain; version=0.0.4")

        async def to_console(request: Request) -> Response:
            return RedirectResponse(f"{CONSOLE_PATH}/", status_code=307)

        return Starlette(
            routes=[
                Route("/", to_console, methods=["GET"]),
                Route(CONSOLE_PATH, to_console, methods=["GET"]),
                Mount(CONSOLE_PATH, app=console_app),
                Route("/metrics", metrics, methods=["GET"]),
                Mount("", app=gateway_app),
            ],
            # A path no mount matches (Mount's pattern stops at a newline, say) is answered
            # like the gateway answers it: a problem+json 404, not Starlette's text/plain.
            exception_handlers={HTTPException: handle_http_exception},
        )

    async def _serve(self, listener: socket.socket) -> None:
        assert self.app is not None
        level = self.settings.log_level.upper()
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning" if level in ("INFO", "WARNING") else level.lower(),
            access_log=False,
            log_config=None,  # our handler formats uvicorn's lines too
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        server = _Server(config)
        self.server = server
        self._serve_task = asyncio.create_task(server.serve(sockets=[listener]), name="dev-http")

        async def stop_serving() -> None:
            server.should_exit = True
            if self._serve_task is not None:
                await asyncio.wait([self._serve_task], timeout=SHUTDOWN_GRACE_S + 2)
                if not self._serve_task.done():
                    self._serve_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._serve_task

        self._stack.push_async_callback(stop_serving)
        while not server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise DevError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def wait_stopped(self) -> None:
        """Until the HTTP server ends (after request_stop)."""
        if self._serve_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._serve_task)

    def request_stop(self, force: bool = False) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if force:
                self.server.force_exit = True

    async def stop(self) -> None:
        """Stop everything started, newest first: listener, console, gateway, orchestrator,
        participants (each with its relay), broker, databases."""
        await self._stack.aclose()

    # -- what it prints -----------------------------------------------------------------------

    def banner(self) -> str:
        return dev_banner(
            self.url,
            data_dir=self.data_dir,
            credentials=self.credentials,
            auth_enabled=self.auth_enabled,
            participants_process=self.participants_process,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def example_curl(url: str, *, auth_enabled: bool) -> str:
    """The ready-to-paste command that places EXAMPLE_ORDER and waits for its outcome."""
    body = orjson.dumps(EXAMPLE_ORDER).decode()
    lines = [
        f"curl -sS -X POST {url}/api/v1/orders",
        "-H 'Content-Type: application/json'",
    ]
    if auth_enabled:
        lines.append('-H "X-API-Key: $SAGAWAY_API_KEY"')
    lines.append(f"-d {shlex.quote(body)}")
    return " \\\n    ".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def dev_banner(
    url: str,
    *,
    data_dir: Path,
    credentials: DevCredentials | None,
    auth_enabled: bool,
    participants_process: bool = False,
) -> str:
    """What `sagaway dev` prints once it answers: where everything is, and how to try it."""
    if credentials is not None:
        login = (
            f"user {credentials.user}, password {credentials.password}"
            f" (saved in {_shown(credentials.path)})"
        )
    else:
        login = "users of [[console.users]]"
    where = "the participants in a 2nd process" if participants_process else "all in this process"
    lines = [
        "Sagaway dev is ready: gateway, orchestrator, inventory, payments, shipping,",
        f"their outbox relays and the console, {where}; data in {_shown(data_dir)}/",
        "",
        f"  API      POST {url}/api/v1/orders",
        f"           POST {url}/api/v1/sagas/{{saga_type}}",
        f"  Status   GET  {url}/api/v1/requests/{{id}}",
        f"  Console       {url}{CONSOLE_PATH}/",
        f"                {login}",
        f"  Metrics       {url}/metrics",
        f"  OpenAPI       {url}/openapi.json",
        "",
    ]
    if not auth_enabled:
        lines += [
            "  ! No API keys are configured: anyone who can reach the gateway may start sagas.",
            "    Configure api_keys (see the README) before listening beyond 127.0.0.1.",
            "",
        ]
    lines += [
        "Place an order; the answer comes when its saga ends. Add -H 'Prefer: respond-async'",
        'for a 202 and a status URL; with "country": "AQ" shipping refuses and the saga',
        "compensates (409):",
        "",
        "  " + example_curl(url, auth_enabled=auth_enabled),
        "",
    ]
    if auth_enabled:
        lines += ["  (set SAGAWAY_API_KEY to one of your configured keys first)", ""]
    lines.append("Ctrl-C stops. Run `sagaway dev` again to continue where it left off; --reset")
    lines.append("starts afresh.")
    return "\n".join(lines)


# ---------------------------------------------------------------- running it


@contextlib.asynccontextmanager
async def _signals(on_signal: Callable[[int], None]) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def run_dev(
    settings: Settings,
    *,
    host: str,
    port: int,
    echo: Callable[[str], None],
    participants_process: bool = False,
) -> None:
    """Start the system, print the banner, serve until SIGINT/SIGTERM, stop cleanly.

    A signal during start-up stops at once; the first after it lets in-hand work finish
    (a few seconds at most); a second one during that stops without waiting for HTTP clients;
    a third exits at once (nothing is lost: every state change is already on disk)."""
    main_task = asyncio.current_task()
    assert main_task is not None
    system = DevSystem(settings, host=host, port=port, participants_process=participants_process)
    phase = "starting"
    signals = 0

    def on_signal(sig: int) -> None:
        nonlocal signals, phase
        signals += 1
        if phase == "starting":
            log.info("%s during start-up: stopping", signal.Signals(sig).name)
            phase = "stopping"
            main_task.cancel()
        elif signals == 1:
            log.info("%s: stopping (Ctrl-C again to stop sooner)", signal.Signals(sig).name)
            system.request_stop()
        elif signals == 2:
            log.warning("stopping without waiting for HTTP clients")
            system.request_stop(force=True)
        else:
            log.warning("exiting at once; the next `sagaway dev` continues from the data dir")
            os._exit(130)

    async with _signals(on_signal):
        try:
            await system.start()
        except asyncio.CancelledError:
            return
        phase = "running"
        try:
            echo(system.banner())
            await system.wait_stopped()
        finally:
            phase = "stopping"
            await system.stop()
        log.info("sagaway dev stopped")
