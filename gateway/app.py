"""The gateway assembled: `Gateway` owns the components and background tasks (replier, pending
poller, callback sender, outbox relay, broker probe); `create_gateway_app` is the public ASGI
app, `create_internal_app` the one for /metrics (on the public listener only when
`gateway_public_metrics` says so)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asyncapi_route import asyncapi_route
from gateway.auth import Authenticator
from gateway.callbacks import CALLBACK_TOPIC, CallbackIntake, CallbackSender
from gateway.health import BrokerHealth
from gateway.metrics import GatewayMetrics
from gateway.openapi import openapi_document
from gateway.origins import request_document
from gateway.pending import PendingPoller, PendingRequests
from gateway.problems import (
    GatewayProblem,
    TooManyFailedAuthentications,
    handle_http_exception,
    handle_problem,
    handle_unexpected,
)
from gateway.ratelimit import RateLimiter
from gateway.replier import Replier, reply_topic
from gateway.request_state import RequestState
from gateway.routes import GatewayRoutes
from gateway.store import RequestStore
from gateway.tracing import TracingMiddleware
from orchestrator.registry import SagaRegistry
from sagaway.http import API_CSP, HeaderLimits, SecurityHeaders, TrustedProxies
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport, TransportError
from sagaway.outbox.choose import Relay, relay_mode
from sagaway.settings import GatewaySettings
from sagaway.storage.database import read_only

log = logging.getLogger("sagaway.gateway")

SERVICE = "gateway"
TOPIC_RETRY_S = 0.5


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Gateway:
    """One gateway instance: its components and the tasks that run beside the HTTP server."""

    def __init__(
        self,
        settings: GatewaySettings,
        registry: SagaRegistry,
        engine: AsyncEngine,
        transport: Transport,
        *,
        relay: Relay | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.transport = transport
        self.relay = relay
        self.instance_id = (instance_id or settings.gateway_instance_id or default_instance_id())[
            :100
        ]
        prefix = transport.settings.topic_prefix
        topics = TopicNames(prefix)
        self.requests_topic = topics.requests("orchestrator")
        self.reply_topic = reply_topic(prefix)
        self.store = RequestStore(engine)
        self.pending = PendingRequests()
        self.metrics = GatewayMetrics()
        self.metrics.watch_pending(lambda: len(self.pending))
        self.auth = Authenticator(settings)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.auth_failures = RateLimiter(
            settings.auth_failure_per_minute / 60 if settings.auth_failure_burst else 0,
            max(1, settings.auth_failure_burst),
            problem=TooManyFailedAuthentications,
            what="failed authentications",
        )
        self.broker_health = BrokerHealth(transport)
        self.callback_sender = CallbackSender(settings, engine, self.metrics)
        self.replier = Replier(
            transport,
            self.store,
            self.pending,
            self.metrics,
            request_document,
            on_stored=self._on_stored,
        )
        self.callback_topic = topics.named(CALLBACK_TOPIC)
        self.callback_intake = RecordProcessor(
            transport,
            transport.settings,
            f"{prefix}gateway.callback-intake",
            [self.callback_topic],
            CallbackIntake(settings, engine, self.callback_sender.wake).handle_batch,
        )
        self.poller = PendingPoller(
            self.pending, self.store.terminal_among, settings.gateway_pending_poll_ms / 1000
        )
        mode = relay_mode(engine, settings.gateway_relay_mode)
        # Publishing at once saves a polling relay's interval when that relay runs elsewhere
        # (docs/gateway.md); a relay in this process is woken by the commit itself, and the WAL
        # relay is as fast, so there a direct produce would only double the traffic.
        self.direct_produce = (
            settings.gateway_direct_produce
            if settings.gateway_direct_produce is not None
            else mode == "poll" and relay is None
        )
        self.routes = GatewayRoutes(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[Any]] = []
        self._openapi: dict[str, Any] | None = None
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the topics, join the reply group and start the background tasks."""
        if not self.auth.enabled:
            log.warning(
                "gateway authentication is OFF: no api_keys and no bearer_secret are configured, "
                "every caller is 'anonymous' (configure keys before exposing this gateway)"
            )
        await self._create_topics()
        await self.replier.start()
        await self.callback_intake.start()
        self._run_in_background(self.poller.run(), "gateway-pending-poller")
        self._run_in_background(self.broker_health.run(), "gateway-broker-health")
        self._run_in_background(self.callback_sender.run(), "gateway-callbacks")
        self._run_in_background(self._housekeeping(), "gateway-housekeeping")
        if self.relay is not None:
            self._run_in_background(self.relay.run(), "gateway-relay")
        self.started = True
        log.info(
            "gateway %s started: replies on %s, commands to %s",
            self.instance_id,
            self.reply_topic,
            self.requests_topic,
        )

    async def stop(self) -> None:
        pending = {*self._background, *self._tasks}
        while pending:
            # Cancelled again until done: a task may swallow one cancellation in a race.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._background.clear()
        await self.replier.stop()
        await self.callback_intake.stop(grace_s=2.0)
        self.auth.close()
        self.started = False

    async def _create_topics(self) -> None:
        partitions = self.transport.settings.partitions
        topics = {
            self.requests_topic: partitions,
            self.reply_topic: partitions,
            self.callback_topic: partitions,
        }
        while True:
            try:
                await self.transport.create_topics(topics)
                return
            except TransportError as exc:
                log.warning("cannot create the gateway's topics yet (%s); retrying", exc)
                await asyncio.sleep(TOPIC_RETRY_S)

    def _run_in_background(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._background.append(asyncio.create_task(coro, name=name))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a short task (a direct produce) without losing the reference to it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_stored(self, stored: list[RequestState]) -> None:
        if any(state.callback_url for state in stored):
            self.callback_sender.wake()

    async def _housekeeping(self) -> None:
        retention = self.settings.idempotency_retention_s
        interval = min(60.0, max(1.0, retention / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                freed = await self.store.forget_idempotency_keys(
                    datetime.now(UTC) - timedelta(seconds=retention)
                )
                if freed:
                    log.info("freed %d idempotency keys past their retention", freed)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("idempotency housekeeping failed: %s", exc)

    # -- operations ---------------------------------------------------------------------------

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(3):
                async with read_only(self.engine) as conn:
                    await conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["database"] = f"{type(exc).__name__}: {exc}"[:300]
        checks["broker"] = (
            "ok" if await self.broker_health.check() else str(self.broker_health.last_error)[:300]
        )
        checks["replier"] = "ok" if self.replier.processor.running else "not running"
        return checks

    def openapi_document(self) -> dict[str, Any]:
        if self._openapi is None:
            self._openapi = openapi_document(self.settings, self.registry)
        return self._openapi


class MetricsMiddleware:
    """Counts every answer by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    GatewayProblem: handle_problem,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def create_gateway_app(
    settings: GatewaySettings,
    registry: SagaRegistry,
    engine: AsyncEngine,
    transport: Transport,
    *,
    relay: Relay | None = None,
    instance_id: str | None = None,
    manage_lifecycle: bool = True,
) -> Starlette:
    """The public gateway app. Its lifespan starts and stops the Gateway (`app.state.gateway`)
    unless `manage_lifecycle` is False (then call `await gateway.start()` / `stop()` yourself,
    e.g. when the app is mounted inside another one whose lifespan runs instead). `relay`, when
    given, publishes the gateway database's outbox and runs as one of the gateway's tasks."""
    gateway = Gateway(settings, registry, engine, transport, relay=relay, instance_id=instance_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await gateway.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await gateway.stop()

    routes = gateway.routes.routes()
    routes.append(asyncapi_route(gateway))
    if settings.gateway_public_metrics:
        routes.append(Route("/metrics", metrics_endpoint(gateway), methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.add_middleware(MetricsMiddleware, metrics=gateway.metrics)
    app.add_middleware(TracingMiddleware)
    harden(app, settings)
    app.state.gateway = gateway
    return app


def harden(app: Starlette, settings: GatewaySettings) -> None:
    """The shared HTTP defences (docs/security.md), outermost first: the client address from
    trusted proxies only, security headers on every answer, then the header limits (431)."""
    app.add_middleware(
        HeaderLimits,
        max_bytes=settings.gateway_max_header_bytes,
        max_count=settings.gateway_max_headers,
    )
    app.add_middleware(SecurityHeaders, csp=API_CSP)
    app.add_middleware(TrustedProxies, trusted=settings.trusted_proxies)


def metrics_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics: the gateway's own registry, then the process-wide one (its relay's lag)."""

    async def metrics(request: Request) -> Response:
        body = gateway.metrics.render() + generate_latest(REGISTRY)
        return Response(body, media_type="text/plain; version=0.0.4")

    return metrics


def create_internal_app(gateway: Gateway) -> Starlette:
    """The internal listener's app: /metrics (Prometheus), /healthz, /readyz."""
    app = Starlette(
        routes=[
            Route("/metrics", metrics_endpoint(gateway), methods=["GET"]),
            Route("/healthz", gateway.routes.healthz, methods=["GET"]),
            Route("/readyz", gateway.routes.readyz, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.add_middleware(SecurityHeaders, csp=API_CSP)
    app.state.gateway = gateway
    return app
