"""The dead letters pages: the list by status, one letter's record, and replaying or discarding
it."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import require_operator, require_user
from console.csrf import check_csrf
from console.dead_letters import DeadLetterNotFound, DeadLetterResolved, discard, replay
from console.links import link
from console.queries.dead_letters import dead_letter_counts, get_dead_letter, list_dead_letters
from console.state import console_of
from sagaway.messaging.transport import TransportError


async def dead_letter_list(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    status = request.query_params.get("status", "new")
    if status not in ("new", "replayed", "discarded"):
        raise HTTPException(400, "status must be new, replayed or discarded")
    before_raw = request.query_params.get("before")
    try:
        before = int(before_raw) if before_raw else None
    except ValueError as exc:
        raise HTTPException(400, "before must be a dead letter id") from exc
    if before is not None and not 0 <= before <= MAX_ID:
        raise HTTPException(400, "before must be a dead letter id")
    size = console.config.page_size
    async with console.db.connect() as conn:
        rows = await list_dead_letters(conn, status=status, before_id=before, limit=size + 1)
        counts = await dead_letter_counts(conn)
    more = len(rows) > size
    rows = rows[:size]
    return console.render(
        request,
        "dead_letters.html",
        rows=rows,
        status=status,
        counts=counts,
        older_link=link(
            request, "dead_letter_list", {"status": status, "before": str(rows[-1]["id"])}
        )
        if more
        else None,
    )


# Ids are 64-bit: a larger number names no letter (and neither database could compare it).
MAX_ID = 2**63 - 1


def _letter_id(request: Request) -> int:
    letter_id = int(request.path_params["letter_id"])
    if letter_id > MAX_ID:
        raise HTTPException(404, "no such dead letter")
    return letter_id


async def dead_letter_detail(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    async with console.db.connect() as conn:
        letter = await get_dead_letter(conn, _letter_id(request))
    if letter is None:
        raise HTTPException(404, "no such dead letter")
    try:
        value = orjson.loads(letter["value_text"])
    except orjson.JSONDecodeError:
        value = None
    return console.render(request, "dead_letter.html", letter=letter, value=value)


async def dead_letter_act(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    letter_id = _letter_id(request)
    action = request.path_params["action"]
    try:
        if action == "replay":
            if console.transport is None:
                raise HTTPException(503, "the broker is not connected yet; try again")
            await replay(console.db, console.transport, letter_id, user.name)
        elif action == "discard":
            await discard(console.db, letter_id, user.name)
        else:
            raise HTTPException(404, f"no action {action!r}")
    except DeadLetterNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except DeadLetterResolved as exc:
        raise HTTPException(409, str(exc)) from exc
    except TransportError as exc:
        raise HTTPException(503, f"the broker refused the replay: {exc}") from exc
    return RedirectResponse(link(request, "dead_letter_detail", letter_id=letter_id), 303)
