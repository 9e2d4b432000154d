"""One saga's page and its htmx-refreshed panel: state, step timeline, timers, unsent outbox
rows, operator audit and a diagnosis of why it is not moving."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from console.action_outcome import ALLOWED_STATUSES, refusal_for
from console.auth import require_user
from console.diagnosis import diagnose
from console.queries.saga import (
    UNPUBLISHED_SEARCHED,
    audit_rows,
    get_saga,
    saga_outbox_rows,
    saga_step_rows,
    saga_timer_rows,
)
from console.queries.saga_list import FINISHED
from console.saga_data import data_view
from console.state import Console, console_of
from console.step_states import describe_steps
from console.timeline import build_timeline, clock
from orchestrator.dsl import SagaDefinition
from orchestrator.models import operator_actions
from orchestrator.registry import UnknownSagaType, UnknownSagaVersion


def _definition(console: Console, saga: dict[str, Any]) -> SagaDefinition | None:
    """The saga's definition when this console loads its version (it knows the pivot and which
    steps have a compensation); None otherwise."""
    try:
        return console.registry.get(saga["saga_type"], int(saga["definition_version"]))
    except (UnknownSagaType, UnknownSagaVersion):
        return None


async def _saga_context(console: Console, saga_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with console.db.connect() as conn:
        saga = await get_saga(conn, saga_id)
        if saga is None:
            raise HTTPException(404, f"no saga {saga_id!r}")
        steps = await saga_step_rows(conn, saga_id)
        timer_rows = await saga_timer_rows(conn, saga_id)
        outbox_rows, outbox_searched_all = await saga_outbox_rows(conn, saga_id)
        audit = await audit_rows(conn, operator_actions, saga_id)
    finished = saga["status"] in FINISHED
    tracks = (saga.get("state") or {}).get("steps") or {}
    awaiting = {
        (name, kind)
        for name, pair in tracks.items()
        for kind in ("forward", "compensation")
        if ((pair or {}).get(kind) or {}).get("status") == "awaiting"
    }
    timeline = build_timeline(
        steps,
        awaiting=awaiting,
        saga_created_at=saga["created_at"],
        now=now,
        finished=finished,
        saga_updated_at=saga["updated_at"],
        audit=audit,
    )
    end = saga["updated_at"] if finished else now
    return {
        "saga": saga,
        "timeline": timeline,
        "timers": timer_rows,
        "outbox_rows": outbox_rows,
        "outbox_searched_all": outbox_searched_all,
        "outbox_searched": UNPUBLISHED_SEARCHED,
        "audit": audit,
        "diagnosis": diagnose(saga, timeline.attempts, timer_rows, outbox_rows, now),
        "finished": finished,
        "duration_s": max(0.0, (end - saga["created_at"]).total_seconds()),
        "step_rows": describe_steps(saga, _definition(console, saga)),
        "data_view": data_view(saga.get("data")),
        "result_view": data_view(saga.get("result")),
        "clock": clock,
        # The panel offers an action only where the confirmation would not refuse it.
        "refusals": {action: refusal_for(action, saga) for action in ALLOWED_STATUSES},
    }


async def saga_detail(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    context = await _saga_context(console, request.path_params["saga_id"])
    return console.render(request, "saga.html", **context)


async def saga_panel(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    context = await _saga_context(console, request.path_params["saga_id"])
    return console.render(request, "_saga_panel.html", **context)
