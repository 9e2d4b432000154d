"""The console app's state: settings, users, data sources, templates and background tasks, and
the page rendering every handler ends with."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from console.auth import ConsoleConfigError, UserDirectory, current_user
from console.consumer_lag import ConsumerLagUnavailable, GroupLag, consumer_lag
from console.csrf import FIELD as CSRF_FIELD
from console.csrf import csrf_token
from console.dead_letters import DeadLetterCollector, dead_letter_topics, run_collector
from console.links import path_of
from console.login_throttle import LoginThrottle, PasswordChecks
from console.sessions import SessionStore
from console.sources import ConsoleSources, LagHistory, open_sources
from console.templating import environment
from orchestrator.registry import SagaRegistry
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport
from sagaway.settings import ConsoleSettings, MessagingSettings, StorageSettings

ACTION_LABELS = {
    "retry": "Retry step now",
    "skip": "Skip step",
    "abort": "Abort (compensate now)",
    "resume": "Resume",
}
CONSUMER_LAG_CACHE_S = 5.0


class Console:
    """The app's state: settings, sources, templates, background tasks."""

    def __init__(
        self,
        config: ConsoleSettings,
        *,
        messaging: MessagingSettings,
        storage: StorageSettings,
        registry: SagaRegistry | None,
        transport: Transport | None,
        orchestrator_engine: AsyncEngine | None,
        background: bool,
    ) -> None:
        self.config = config
        self.messaging = messaging
        self.storage = storage
        self.users = UserDirectory(self.config.users)
        if not len(self.users):
            raise ConsoleConfigError(
                "no console users are configured: add [[console.users]] with a name, a role and "
                "a password_hash (from `sagaway console --hash-password`)"
            )
        # No registry: every saga is shown, and acting on one is refused as "not loaded here".
        self.registry = registry if registry is not None else SagaRegistry()
        self.topics = TopicNames(messaging.topic_prefix)
        self.dead_letter_topics = dead_letter_topics(config, messaging.topic_prefix)
        self._given_transport = transport
        self.transport: Transport | None = transport
        self._given_engine = orchestrator_engine
        self.background = background
        self.sources: ConsoleSources | None = None
        self.history = LagHistory(self.config.sample_interval_s)
        self.env = environment()
        self.tasks: list[asyncio.Task[None]] = []
        self._lag_cache: tuple[float, list[GroupLag] | str] | None = None
        self.session_store: SessionStore | None = None
        self.throttle: LoginThrottle | None = None
        self.password_checks = PasswordChecks(
            config.login_verify_concurrency, config.login_verify_queue
        )

    @property
    def db(self) -> AsyncEngine:
        assert self.sources is not None, "the console app is not started"
        return self.sources.orchestrator

    async def start(self) -> None:
        if self.sources is not None:
            return
        self.sources = open_sources(self.config, self.storage, self._given_engine)
        self.session_store = SessionStore(self.db, timedelta(seconds=self.config.session_max_age_s))
        self.throttle = LoginThrottle(self.db, self.config)
        if not self.background:
            return
        self.tasks.append(asyncio.create_task(self.history.run(self.sources), name="console-lag"))
        if self.transport is None:
            from sagaway.messaging.factory import connect_transport

            async def connect_then_collect() -> None:
                self.transport = await connect_transport(self.messaging)
                await run_collector(self._collector(self.transport))

            self.tasks.append(asyncio.create_task(connect_then_collect(), name="console-dlq"))
        else:
            collector = self._collector(self.transport)
            self.tasks.append(asyncio.create_task(run_collector(collector), name="console-dlq"))

    def _collector(self, transport: Transport) -> DeadLetterCollector:
        return DeadLetterCollector(self.dead_letter_topics, transport, self.db)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transport is not None and self._given_transport is None:
            await self.transport.close()
        if self.sources is not None:
            await self.sources.close()
            self.sources = None
            self.session_store = self.throttle = None
        self.tasks.clear()

    async def consumer_lag(self) -> list[GroupLag] | str:
        loop = asyncio.get_running_loop()
        # Kafka's admin round trips are worth caching; the embedded broker's file is cheap to read.
        ttl = CONSUMER_LAG_CACHE_S if self.messaging.kafka_bootstrap else 0.5
        if self._lag_cache and loop.time() - self._lag_cache[0] < ttl:
            return self._lag_cache[1]
        result: list[GroupLag] | str
        try:
            result = await consumer_lag(self.messaging)
        except (ConsumerLagUnavailable, TimeoutError) as exc:
            result = str(exc) or "timed out"
        self._lag_cache = (loop.time(), result)
        return result

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        user = current_user(request)
        context.update(
            request=request,
            user=user,
            url=lambda name, **path: path_of(request, name, **path),
            csrf_field=Markup(
                f'<input type="hidden" name="{CSRF_FIELD}" value="{csrf_token(request)}">'
            ),
            refresh_s=self.config.refresh_interval_s,
            text_limit=self.config.operator_text_max_chars,
            action_labels=ACTION_LABELS,
            now=datetime.now(UTC),
        )
        html = self.env.get_template(name).render(context)
        # Pages show what only a logged-in user may see: no cache keeps them.
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def console_of(request: Request) -> Console:
    """The console a request reached (create_console_app keeps it on the app's state)."""
    return request.app.state.console  # type: ignore[no-any-return]
