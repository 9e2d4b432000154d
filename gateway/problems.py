"""Every error the gateway answers, as a typed exception, and the ONE place that turns them into
`application/problem+json` responses (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("sagaway.gateway")

PROBLEM_TYPE_BASE = "https://sagaway.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class GatewayProblem(Exception):
    """An error with its HTTP status; `extra` members are added to the problem document."""

    status = 500
    slug = "internal-error"
    title = "Internal error"
    retry_after: int | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        # Response headers the answer carries besides the problem's own (Location on a 409).
        self.headers: dict[str, str] = {}

    def to_json(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class MalformedJson(GatewayProblem):
    status, slug, title = 400, "malformed-json", "Malformed JSON body"


class BadRequest(GatewayProblem):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthenticated(GatewayProblem):
    status, slug, title = 401, "unauthenticated", "Authentication required"


class Forbidden(GatewayProblem):
    status, slug, title = 403, "forbidden", "Not allowed"


class SagaNotFound(GatewayProblem):
    status, slug, title = 404, "saga-not-found", "Unknown saga type"


class RequestNotFound(GatewayProblem):
    status, slug, title = 404, "request-not-found", "Unknown request"


class RouteNotFound(GatewayProblem):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(GatewayProblem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class SagaDidNotComplete(GatewayProblem):
    """The saga ended compensated or failed: 409 naming the step and the reason."""

    status, slug, title = 409, "saga-not-completed", "The saga did not complete"


class PayloadTooLarge(GatewayProblem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(GatewayProblem):
    status, slug, title = 415, "unsupported-media-type", "Request body must be JSON"


class InvalidInput(GatewayProblem):
    """The body fails the saga's input model; `errors` lists the fields."""

    status, slug, title = 422, "invalid-input", "Input does not match the saga's input model"


class IdempotencyKeyReused(GatewayProblem):
    status, slug, title = 422, "idempotency-key-reused", "Idempotency-Key reused with another body"


class CallbackRefused(GatewayProblem):
    status, slug, title = 422, "callback-refused", "Callback URL not allowed"


class RateLimited(GatewayProblem):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class TooManyFailedAuthentications(RateLimited):
    """An address that failed to authenticate too often: refused before any key is checked."""

    slug, title = "too-many-failed-authentications", "Too many failed authentications"


class ServiceUnavailable(GatewayProblem):
    status, slug, title = 503, "unavailable", "Service unavailable"
    retry_after = 2


class BrokerUnavailable(ServiceUnavailable):
    slug, title = "broker-unavailable", "Message broker unavailable"


class AuthenticationBusy(ServiceUnavailable):
    slug, title = "authentication-busy", "Too many credentials being checked"
    retry_after = 1


class DatabaseUnavailable(ServiceUnavailable):
    slug, title = "database-unavailable", "Database unavailable"


def problem_response(problem: GatewayProblem, instance: str | None = None) -> Response:
    headers = dict(problem.headers)
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    if isinstance(problem, MethodNotAllowed) and "allow" in problem.extra:
        headers["Allow"] = ", ".join(problem.extra["allow"])
    return Response(
        orjson.dumps(problem.to_json(instance)),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def handle_problem(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for GatewayProblem and its subclasses."""
    assert isinstance(exc, GatewayProblem)
    return problem_response(exc, request.url.path)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route matched) answered as problems too."""
    assert isinstance(exc, HTTPException)
    problem: GatewayProblem
    if exc.status_code == 404:
        problem = RouteNotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        problem = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}",
            allow=[m.strip() for m in allow.split(",") if m.strip()],
        )
    else:
        problem = GatewayProblem(str(exc.detail))
        problem.status = exc.status_code
    return problem_response(problem, request.url.path)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: log it with its traceback and answer a problem that says nothing internal."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(GatewayProblem("an unexpected error happened"), request.url.path)
