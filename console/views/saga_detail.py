"""One saga's page and its htmx-refreshed panel: state, step timeline, timers, unsent outbox
rows, operator audit and a diagnosis of why it is not moving."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.diagnosis import diagnose
from console.queries.saga import (
    audit_rows,
    get_saga,
    saga_outbox_rows,
    saga_step_rows,
    saga_timer_rows,
)
from console.queries.saga_list import FINISHED
from console.state import Console, console_of
from console.timeline import build_timeline
from orchestrator.models import operator_actions


async def _saga_context(console: Console, saga_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with console.db.connect() as conn:
        saga = await get_saga(conn, saga_id)
        if saga is None:
            raise HTTPException(404, f"no saga {saga_id!r}")
        steps = await saga_step_rows(conn, saga_id)
        timer_rows = await saga_timer_rows(conn, saga_id)
        outbox_rows = await saga_outbox_rows(conn, saga_id)
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
    )
    state = saga.get("state") or {}
    step_names = list((state.get("steps") or {}).keys())
    return {
        "saga": saga,
        "timeline": timeline,
        "timers": timer_rows,
        "outbox_rows": outbox_rows,
        "audit": audit,
        "diagnosis": diagnose(saga, timeline.attempts, timer_rows, outbox_rows, now),
        "finished": finished,
        "step_names": step_names,
        "step_states": {name: (state.get("steps") or {}).get(name, {}) for name in step_names},
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
