"""Bulk replay or discard of the new dead letters (of one source topic, or all): the confirmation
lists the letters it will act on (paged, none newer than when it was shown); the POST records the
bulk action, acts on each, and answers 303 to its result page, so a refresh repeats nothing."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import bulk
from console.auth import require_operator
from console.csrf import check_csrf
from console.dead_letters import NEW, DeadLetterNotFound, DeadLetterResolved, discard, replay
from console.links import link
from console.queries.dead_letters import (
    count_dead_letters,
    dead_letter_ids,
    list_dead_letters,
    newest_id,
)
from console.state import Console, console_of
from console.views.dead_letters import LETTER_ACTIONS, letter_id_param, topic_param
from sagaway.messaging.transport import TransportError

log = logging.getLogger(__name__)
ACTION_NAMES = {"replay": "replay-dlq", "discard": "discard-dlq"}


def _action(value: str | None) -> str:
    if value not in LETTER_ACTIONS:
        raise HTTPException(400, "bulk action must be replay or discard")
    return value


async def dead_letter_bulk_confirm(request: Request) -> Response:
    require_operator(request)
    console = console_of(request)
    params = request.query_params
    action = _action(params.get("action"))
    topic = topic_param(params.get("topic"))
    before = letter_id_param(params.get("before"), "before")
    size, limit = console.config.page_size, console.config.bulk_limit
    async with console.db.connect() as conn:
        up_to = letter_id_param(params.get("up_to"), "up_to") or await newest_id(conn)
        count = await count_dead_letters(conn, status=NEW, topic=topic, up_to=up_to, limit=limit)
        rows = await list_dead_letters(
            conn, status=NEW, before_id=before, limit=size + 1, topic=topic, up_to=up_to
        )
    more = len(rows) > size
    rows = rows[:size]
    same = {"action": action, "up_to": str(up_to), **({"topic": topic} if topic else {})}
    return console.render(
        request,
        "confirm_dead_letter_bulk.html",
        action=action,
        topic=topic,
        count=count,
        limit=limit,
        rows=rows,
        up_to=up_to,
        form_id=bulk.new_form_id(),
        older_link=link(
            request, "dead_letter_bulk_confirm", {**same, "before": str(rows[-1]["id"])}
        )
        if more
        else None,
        first_link=link(request, "dead_letter_bulk_confirm", same) if before else None,
    )


async def _act_on_each(
    console: Console, action: str, ids: list[int], actor: str
) -> list[dict[str, Any]]:
    """Replay or discard each letter; one already resolved (or gone) is listed as refused."""
    results: list[dict[str, Any]] = []
    for letter_id in ids:
        try:
            if action == "replay":
                assert console.transport is not None
                await replay(console.db, console.transport, letter_id, actor)
            else:
                await discard(console.db, letter_id, actor)
        except (DeadLetterNotFound, DeadLetterResolved, TransportError) as exc:
            results.append({
                "id": letter_id, "outcome": "refused", "status": "rejected",
                "headline": "refused", "text": str(exc),
            })
            continue
        status = "replayed" if action == "replay" else "discarded"
        results.append({
            "id": letter_id, "outcome": "applied", "status": status, "headline": status,
            "text": "sent back to its source topic" if action == "replay" else "discarded",
        })
    return results


async def dead_letter_bulk_apply(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    fields = {k: str(v) for k, v in form.items()}
    action = _action(fields.get("action"))
    topic = topic_param(fields.get("topic"))
    up_to = letter_id_param(fields.get("up_to"), "up_to")
    form_id = fields.get("form_id", "")
    if up_to is None or not bulk.valid_form_id(form_id):
        raise HTTPException(400, "a bulk action is sent from its confirmation page")
    already = await bulk.started(console.db, form_id)
    if already is not None:
        return RedirectResponse(link(request, "bulk_result", audit_id=already), 303)
    if action == "replay" and console.transport is None:
        raise HTTPException(503, "the broker is not connected yet; try again")
    async with console.db.connect() as conn:
        ids = await dead_letter_ids(
            conn, status=NEW, topic=topic, up_to=up_to, limit=console.config.bulk_limit
        )
    params = {"kind": "dead-letters", "topic": topic, "up_to": up_to, "count": len(ids)}
    audit_id = await bulk.start(
        console.db, action=ACTION_NAMES[action], actor=user.name, form_id=form_id, params=params
    )
    results = await _act_on_each(console, action, ids, user.name)
    await bulk.finish(console.db, audit_id, params, results)
    log.info("console: %s bulk %s of %d dead letters", user.name, action, len(ids))
    return RedirectResponse(link(request, "bulk_result", audit_id=audit_id), 303)
