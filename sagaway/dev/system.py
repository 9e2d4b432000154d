"""`sagaway dev`'s system: the example participants, the orchestrator (and its timers), a polling
relay per database, the gateway and the console at /console, on one SQLite file per service and
the embedded broker in the data dir, behind ONE HTTP listener. Everything runs in this process,
except (from the CLI, by default) the participants, which run in a second one to use a second
core (sagaway/dev/second_process.py).

Every piece of state lives in those files, so stopping (or killing) the process loses nothing:
the next `sagaway dev` on the same data dir continues the sagas in flight. The composition is
`DevSystem`; `run_dev` adds signals and the banner; the click verb is in sagaway/cli/dev.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from orchestrator.registry import SagaModuleError, load_registry
from sagaway.dev import DevError
from sagaway.dev.banner import dev_banner
from sagaway.dev.data_dir import SERVICES, DataDirLock, DevCredentials, dev_credentials, migrate_all
from sagaway.dev.dev_settings import console_settings, dev_settings
from sagaway.dev.listener import (
    DevServer,
    base_url,
    bind_internal_listener,
    bind_listener,
    compose_app,
    dev_server,
    metrics_app,
)
from sagaway.dev.participants import start_example_participants
from sagaway.dev.second_process import (
    ParticipantsProcess,
    ParticipantsProcessError,
    export_participant_lag,
)
from sagaway.messaging.factory import connect_transport
from sagaway.messaging.transport import Transport
from sagaway.observability.gc_tuning import freeze_startup_heap
from sagaway.outbox.choose import make_relay
from sagaway.settings.composed import Settings
from sagaway.storage.database import connect_database

log = logging.getLogger("sagaway.dev")

SHUTDOWN_GRACE_S = 3


class DevSystem:
    """Every role on one embedded broker and one listener; on one event loop, or with
    `participants_process` the example participants in a second process.

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
        self.server: DevServer | None = None
        self.app: Starlette | None = None
        self.metrics_url: str | None = None
        self.engines: dict[str, AsyncEngine] = {}
        self.transport: Transport | None = None
        self._stack = contextlib.AsyncExitStack()
        self._serve_task: asyncio.Task[None] | None = None
        self.phases: dict[str, float] = {}
        self._phase_began = 0.0

    @property
    def data_dir(self) -> Path:
        return self.settings.storage.data_dir

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
        internal = bind_internal_listener(self.settings.gateway, self.port)
        if internal is not None:
            stack.callback(internal.close)
            host = self.settings.gateway.gateway_internal_host
            self.metrics_url = f"{base_url(host, internal.getsockname()[1])}/metrics"
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
        registry = load_registry(settings.orchestrator.sagas or [])

        # Alembic narrates every revision at INFO; the summary lines say enough.
        alembic_log = logging.getLogger("alembic")
        alembic_log.setLevel(max(logging.WARNING, logging.getLogger().level))
        self.migrations = await asyncio.to_thread(migrate_all, settings.storage)
        for line in self.migrations:
            log.info(line)
        self._phase("migrate")
        for service in SERVICES:
            engine = await connect_database(settings.storage, service)
            stack.push_async_callback(engine.dispose)
            self.engines[service] = engine
        await self._seed()
        self._phase("seed")

        transport = await connect_transport(settings.messaging)
        stack.push_async_callback(transport.close)
        self.transport = transport

        # Consumers before producers: the participants and the orchestrator join their groups
        # before the gateway takes requests (each is durable anyway; this only saves a wait).
        if self.participants_process:
            await self._start_participants_process()
        else:
            await start_example_participants(
                settings, self.engines, transport, stack, SHUTDOWN_GRACE_S
            )

        from orchestrator.service import OrchestratorService

        orchestrator_engine = self.engines["orchestrator"]
        orchestrator = OrchestratorService(
            settings.orchestrator,
            registry,
            orchestrator_engine,
            transport,
            relay=make_relay(settings.relay, "orchestrator", orchestrator_engine, transport),
        )
        await orchestrator.start()
        stack.push_async_callback(orchestrator.stop)

        from gateway.app import create_gateway_app

        gateway_engine, gateway_settings = self.engines["gateway"], settings.gateway
        gateway_relay = (
            make_relay(
                settings.relay,
                "gateway",
                gateway_engine,
                transport,
                gateway_settings.gateway_relay_mode,
            )
            if gateway_settings.gateway_run_relay
            else None
        )
        gateway_app = create_gateway_app(
            gateway_settings,
            registry,
            gateway_engine,
            transport,
            relay=gateway_relay,
            manage_lifecycle=False,
        )
        gateway = gateway_app.state.gateway
        self.auth_enabled = gateway.auth.enabled
        await gateway.start()
        stack.push_async_callback(gateway.stop)

        from console.app import console_lifespan, create_console_app

        console_app = create_console_app(
            settings.console,
            messaging=settings.messaging,
            storage=settings.storage,
            registry=registry,
            transport=transport,
            orchestrator_engine=self.engines["orchestrator"],
        )
        await stack.enter_async_context(console_lifespan(console_app))

        self._phase("services")
        self.app = compose_app(gateway_app, console_app)
        if internal is not None:
            await self._serve_internal(internal, metrics_app(gateway.metrics.render))
        await self._serve(listener)
        self._phase("http")
        log.info(
            "started in %s",
            ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.phases.items()),
        )

    async def _start_participants_process(self) -> None:
        try:
            self.participants = ParticipantsProcess(self.settings, SHUTDOWN_GRACE_S)
            await self.participants.start()
        except ParticipantsProcessError as exc:
            raise DevError(f"cannot start: {exc}") from exc
        self._stack.push_async_callback(self.participants.stop)
        lag = asyncio.create_task(
            export_participant_lag(
                self.engines, max(self.settings.relay.relay_heartbeat_interval_s, 1.0)
            ),
            name="dev-participant-lag",
        )
        self._stack.push_async_callback(_cancel, lag)

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

    async def _serve(self, listener: socket.socket) -> None:
        assert self.app is not None
        log_level = self.settings.observability.log_level
        server = dev_server(self.app, log_level=log_level, grace_s=SHUTDOWN_GRACE_S)
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

    async def _serve_internal(self, listener: socket.socket, app: Starlette) -> None:
        """/metrics on the internal listener, stopped after the public one."""
        log_level = self.settings.observability.log_level
        server = dev_server(app, log_level=log_level, grace_s=1)
        task = asyncio.create_task(server.serve(sockets=[listener]), name="dev-metrics-http")

        async def stop_serving() -> None:
            server.should_exit = True
            await asyncio.wait([task], timeout=3)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

        self._stack.push_async_callback(stop_serving)
        while not server.started:
            if task.done():
                task.result()
                raise DevError("the internal HTTP server (/metrics) stopped while starting")
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

    def banner(self) -> str:
        return dev_banner(
            self.url,
            data_dir=self.data_dir,
            credentials=self.credentials,
            auth_enabled=self.auth_enabled,
            participants_process=self.participants_process,
            metrics_url=self.metrics_url,
            public_metrics=self.settings.gateway.gateway_public_metrics,
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
        freeze_startup_heap()
        phase = "running"
        try:
            echo(system.banner())
            await system.wait_stopped()
        finally:
            phase = "stopping"
            await system.stop()
        log.info("sagaway dev stopped")
