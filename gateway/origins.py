"""The three origins of a request and how each is answered: sync (held until the saga ends,
`Prefer: wait=N` caps the wait), async (`Prefer: respond-async`: 202 + status URL) and callback
(`Callback-Url`: async, and the result is POSTed there)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response

from gateway.problems import BadRequest, CallbackRefused, SagaDidNotComplete
from gateway.request_state import RequestState
from sagaway.settings import GatewaySettings

STATUS_PATH = "/api/v1/requests/{id}"
# What a client holding a 202 is told to wait before polling the status URL.
POLL_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class Origin:
    """How the client wants its answer. `mode` is sync | async | callback."""

    mode: str
    wait_s: float
    callback_url: str | None = None

    @property
    def reply_mode(self) -> str:
        return "sync" if self.mode == "sync" else "async"


def parse_prefer(value: str | None) -> tuple[bool, float | None]:
    """(respond-async asked, wait seconds asked) from an RFC 7240 Prefer header."""
    respond_async = False
    wait: float | None = None
    for item in (value or "").split(","):
        preference = item.split(";", 1)[0].strip()
        name, _, argument = preference.partition("=")
        name = name.strip().lower()
        argument = argument.strip().strip('"')
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            try:
                wait = float(argument)
            except ValueError:
                raise BadRequest(f"Prefer: wait={argument!r} is not a number of seconds") from None
            if wait < 0:
                raise BadRequest("Prefer: wait must not be negative")
    return respond_async, wait


def choose_origin(headers: Headers, settings: GatewaySettings) -> Origin:
    respond_async, wait = parse_prefer(headers.get("prefer"))
    wait_s = min(
        settings.gateway_max_wait_s, settings.gateway_default_wait_s if wait is None else wait
    )
    callback_url = headers.get("callback-url")
    if callback_url is not None:
        if not settings.callback_secret:
            raise CallbackRefused(
                "callbacks are not enabled on this gateway (no callback_secret is configured)"
            )
        return Origin("callback", 0.0, callback_url.strip())
    if respond_async:
        return Origin("async", 0.0)
    return Origin("sync", wait_s)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def request_document(state: RequestState) -> dict[str, Any]:
    """The JSON of `GET /api/v1/requests/{id}` and of a callback POST."""
    return {
        "id": state.id,
        "saga_type": state.saga_type,
        "status": state.status,
        "result": state.result,
        "failure": state.error,
        "received_at": _time(state.received_at),
        "completed_at": _time(state.completed_at),
    }


def status_url(request_id: str) -> str:
    return STATUS_PATH.format(id=request_id)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def accepted_response(
    state: RequestState, *, retry_after: bool = False, replayed: bool = False
) -> Response:
    """202: the request is safely stored; here is where to look for its result."""
    headers = {"Location": status_url(state.id)}
    if retry_after:
        headers["Retry-After"] = str(POLL_AFTER_S)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {"id": state.id, "saga_type": state.saga_type, "status": state.status}
    return json_response(body, 202, headers)


def final_response(state: RequestState, *, replayed: bool = False) -> Response:
    """200 with the result when completed; raises the 409 problem when compensated/failed.
    Both carry Location, and `Idempotent-Replayed: true` when answering a repeated key."""
    headers = {"Location": status_url(state.id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if state.status != "completed":
        failure = state.error if isinstance(state.error, dict) else {}
        step = failure.get("step")
        reason = failure.get("reason") or f"the saga ended {state.status}"
        where = f" at step {step!r}" if step else ""
        problem = SagaDidNotComplete(
            f"saga {state.saga_type} ended {state.status}{where}: {reason}",
            id=state.id,
            saga_type=state.saga_type,
            saga_status=state.status,
            step=step,
            reason=reason,
        )
        problem.headers.update(headers)  # a replayed 409 says so, like a replayed 200
        raise problem
    body = {
        "id": state.id,
        "saga_type": state.saga_type,
        "status": "completed",
        "result": state.result,
    }
    return json_response(body, 200, headers)


def status_response(state: RequestState, if_none_match: str | None) -> Response:
    """GET of a request: a terminal result never changes, so it carries an ETag and may be
    cached for good; an unfinished one says when to look again."""
    body = orjson.dumps(request_document(state))
    if not state.terminal:
        return Response(
            body,
            media_type="application/json",
            headers={"Cache-Control": "no-store", "Retry-After": str(POLL_AFTER_S)},
        )
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
