"""The HTTP routes of the public listener: start a saga (sync/async/callback), read a request,
health, readiness and the OpenAPI document. Errors are raised as `gateway.problems` types."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.auth import Identity
from gateway.idempotency import body_hash, check_key, check_replay, scoped_key
from gateway.origins import (
    Origin,
    accepted_response,
    choose_origin,
    final_response,
    json_response,
    status_response,
)
from gateway.problems import (
    BrokerUnavailable,
    Forbidden,
    InvalidInput,
    MalformedJson,
    PayloadTooLarge,
    RequestNotFound,
    SagaNotFound,
    Unauthenticated,
    UnsupportedMediaType,
)
from gateway.request_state import RequestState
from gateway.ssrf import check_callback_url
from orchestrator.dsl import SagaDefinition
from orchestrator.registry import UnknownSagaType
from sagaway.messaging.envelope import Message, command
from sagaway.messaging.records import Record
from sagaway.observability import logs, tracing

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("sagaway.gateway")

START_COMMAND = "orchestrator.start"
DIRECT_PRODUCE_TIMEOUT_S = 5.0


TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent(incoming: str | None) -> str:
    """The caller's W3C trace context if well-formed, else a new trace."""
    if incoming and TRACEPARENT.match(incoming.strip()):
        return incoming.strip()
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as plain JSON: which field, what is wrong."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False)
    ]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes; the limit is {limit}", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def nul_path(value: Any, path: str = "") -> str | None:
    """Where the first NUL character (U+0000) is in a decoded JSON document, else None.
    PostgreSQL cannot store it in text or jsonb, so such input is refused on every database."""
    if isinstance(value, str):
        return (path or "(body)") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return where
            found = nul_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class GatewayRoutes:
    """Route handlers bound to one Gateway's components."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._direct: list[Record] = []  # start commands waiting for their direct produce

    def routes(self) -> list[BaseRoute]:
        table = [
            Route(
                route.path,
                self._route_table_endpoint(route.saga),
                methods=[route.method],
                name=f"route:{route.path}",
            )
            for route in self.gw.settings.routes
        ]
        return [
            Route("/api/v1/sagas/{saga_type}", self.start_saga, methods=["POST"]),
            *table,
            Route("/api/v1/requests/{request_id}", self.get_request, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    # -- identity and limits ------------------------------------------------------------------

    async def identify(self, request: Request) -> Identity:
        """Authenticate, then rate limit by principal. An address that failed too often is
        refused (429) before any credential is looked at, so failures cost nothing."""
        address = request.client.host if request.client else "unknown"
        failures = self.gw.auth_failures
        failures.check(address)
        try:
            identity = await self.gw.auth.authenticate(request)
        except Unauthenticated:
            failures.spend(address)
            raise
        self.gw.rate_limiter.take(identity.principal if identity.authenticated else address)
        return identity

    # -- starting a saga ----------------------------------------------------------------------

    def _route_table_endpoint(self, saga_type: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self.start(request, saga_type)

        return endpoint

    async def start_saga(self, request: Request) -> Response:
        return await self.start(request, request.path_params["saga_type"])

    async def start(self, request: Request, saga_type: str) -> Response:
        # Log lines of this request carry its id (the correlation id) once it has one.
        context = logs.RequestContext()
        token = logs.bind(context)
        try:
            return await self._start(request, saga_type, context)
        finally:
            logs.reset(token)

    async def _start(
        self, request: Request, saga_type: str, context: logs.RequestContext
    ) -> Response:
        gw = self.gw
        identity = await self.identify(request)
        try:
            definition = gw.registry.latest(saga_type)
        except UnknownSagaType as exc:
            raise SagaNotFound(str(exc), known=exc.known) from None
        identity.check_may_start(saga_type)
        if not is_json(request.headers.get("content-type")):
            raise UnsupportedMediaType(
                "send the saga input as a JSON object with Content-Type: application/json"
            )
        raw = await read_body(request, gw.settings.gateway_body_limit_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJson(f"the body is not valid JSON: {exc}") from None
        data = self.validate(definition, body)
        origin = choose_origin(request.headers, gw.settings)
        if origin.callback_url is not None:
            await check_callback_url(origin.callback_url, gw.settings.callback_allowed_hosts)
        key = check_key(request.headers.get("idempotency-key"))
        fingerprint = body_hash(saga_type, body)
        scoped = scoped_key(identity.principal, key) if key is not None else None
        if scoped is not None:
            existing = await gw.store.by_idempotency_key(scoped)
            if existing is not None:
                check_replay(existing, fingerprint)
                return await self.answer(existing, origin, replayed=True)
        if not gw.broker_health.up:
            raise BrokerUnavailable(
                f"the message broker is unavailable ({gw.broker_health.last_error}); "
                "nothing was accepted, try again"
            )
        request_id = str(uuid.uuid4())
        context.correlation_id = context.saga_id = request_id
        route = request.scope.get("route")
        values: dict[str, Any] = {
            "id": request_id,
            "saga_type": saga_type,
            "route": getattr(route, "path", request.url.path),
            "mode": origin.mode,
            "reply_to": gw.reply_topic,
            "callback_url": origin.callback_url,
            "idempotency_key": scoped,
            "body_hash": fingerprint,
            "principal": identity.principal,
            "gateway_id": gw.instance_id,
            "status": "accepted",
            "received_at": datetime.now(UTC),
        }
        message = command(
            START_COMMAND,
            data,
            saga_id=request_id,
            saga_type=saga_type,
            correlation_id=request_id,
            reply_to=gw.reply_topic,
            reply_mode=origin.reply_mode,
            principal=identity.principal,
            traceparent=tracing.child_traceparent(
                tracing.current_traceparent() or traceparent(request.headers.get("traceparent")),
                f"send {START_COMMAND}",
                service="gateway",
                destination=gw.requests_topic,
                correlation_id=request_id,
                saga_id=request_id,
            ),
        )
        # Registered before the commit, so a reply that comes back fast cannot be missed.
        future = gw.pending.register(request_id) if origin.mode == "sync" else None
        try:
            await gw.store.accept(values, (gw.requests_topic, message))
        except sa.exc.IntegrityError:
            if future is not None:
                gw.pending.discard(request_id, future)
            # Another request with this Idempotency-Key committed first: answer with it.
            existing = await gw.store.by_idempotency_key(scoped) if scoped else None
            if existing is None:
                raise
            check_replay(existing, fingerprint)
            return await self.answer(existing, origin, replayed=True)
        except BaseException:
            if future is not None:
                gw.pending.discard(request_id, future)
            raise
        gw.metrics.sagas_started.labels(saga_type).inc()
        if gw.direct_produce:
            self.produce_soon(message)
        state = RequestState(
            id=request_id,
            saga_type=saga_type,
            route=values["route"],
            mode=origin.mode,
            status="accepted",
            principal=identity.principal,
            body_hash=fingerprint,
            callback_url=origin.callback_url,
            result=None,
            error=None,
            received_at=values["received_at"],
            completed_at=None,
        )
        if future is None:
            return accepted_response(state)
        return await self.hold(state, origin, future)

    def validate(self, definition: SagaDefinition, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidInput(
                "the body must be a JSON object",
                errors=[{"field": "(body)", "message": "not an object", "type": "object_type"}],
            )
        where = nul_path(body)
        if where is not None:
            field = where.replace("\x00", "\\u0000")
            raise InvalidInput(
                "the input contains a NUL character (\\u0000), which cannot be stored",
                errors=[{"field": field, "message": "contains \\u0000", "type": "nul_character"}],
            )
        try:
            return definition.validate_input(body)
        except ValidationError as exc:
            raise InvalidInput(
                f"the input does not match the input model of saga {definition.saga_type}",
                errors=field_errors(exc),
            ) from None
        except (TypeError, ValueError) as exc:
            raise InvalidInput(str(exc), errors=[]) from None

    def produce_soon(self, message: Message) -> None:
        """Publish the start command at once (the relay sends the outbox copy anyway), together
        with those of the requests committed in the same group commit: one produce for them."""
        self._direct.append(message.to_record(self.gw.requests_topic))
        if len(self._direct) == 1:
            self.gw.spawn(self._produce_direct())

    async def _produce_direct(self) -> None:
        records, self._direct = self._direct, []
        try:
            async with asyncio.timeout(DIRECT_PRODUCE_TIMEOUT_S):
                await self.gw.transport.produce(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the outbox still holds them: nothing is lost
            self.gw.broker_health.mark_down(exc)

    async def answer(self, state: RequestState, origin: Origin, *, replayed: bool) -> Response:
        """Answer a request that already exists (an idempotent retry) as its origin asks."""
        if state.terminal:
            if origin.mode == "sync":
                return final_response(state, replayed=True)
            return accepted_response(state, replayed=True)
        if origin.mode != "sync":
            return accepted_response(state, replayed=True)
        future = self.gw.pending.register(state.id)
        # It may have ended between the look-up and the registration.
        try:
            latest = await self.gw.store.get(state.id)
        except BaseException:
            self.gw.pending.discard(state.id, future)
            raise
        if latest is not None and latest.terminal:
            self.gw.pending.discard(state.id, future)
            return final_response(latest, replayed=True)
        return await self.hold(state, origin, future, replayed=True)

    async def hold(
        self,
        state: RequestState,
        origin: Origin,
        future: asyncio.Future[RequestState],
        *,
        replayed: bool = False,
    ) -> Response:
        """Keep the HTTP request open until the saga ends or the wait runs out (→ 202)."""
        try:
            async with asyncio.timeout(origin.wait_s):
                done = await asyncio.shield(future)
        except TimeoutError:
            return accepted_response(state, retry_after=True, replayed=replayed)
        finally:
            self.gw.pending.discard(state.id, future)
        return final_response(done, replayed=replayed)

    # -- reading a request --------------------------------------------------------------------

    async def get_request(self, request: Request) -> Response:
        identity = await self.identify(request)
        request_id = request.path_params["request_id"]
        state = await self.gw.store.get(request_id) if len(request_id) <= 36 else None
        if state is None:
            raise RequestNotFound(f"no request {request_id}")
        if identity.authenticated and state.principal != identity.principal:
            raise Forbidden(f"request {request_id} belongs to another principal")
        return status_response(state, request.headers.get("if-none-match"))

    # -- operations ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        checks = await self.gw.readiness()
        ready = all(value == "ok" for value in checks.values())
        return json_response(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            200 if ready else 503,
            None if ready else {"Retry-After": "2"},
        )

    async def openapi(self, request: Request) -> Response:
        return json_response(self.gw.openapi_document())
