"""The dead letters pages: the list by status (and source topic), one letter's record with its
saga and replay links, and replaying or discarding it (POST, then 303 to the letter's page)."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import require_operator, require_user
from console.csrf import check_csrf
from console.dead_letters import (
    MAX_ID,
    DeadLetterNotFound,
    DeadLetterResolved,
    discard,
    replay,
)
from console.inputs import has_control_character
from console.links import link
from console.queries.dead_letters import (
    dead_letter_counts,
    get_dead_letter,
    list_dead_letters,
    replays_that_failed,
    saga_exists,
)
from console.state import console_of
from sagaway.messaging.transport import TransportError

STATUSES = ("new", "replayed", "discarded")
LETTER_ACTIONS = ("replay", "discard")


def letter_id_param(value: str | None, name: str) -> int | None:
    """A dead letter id from the query string (None when absent); 400 when not one."""
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_ID:
        raise HTTPException(400, f"{name} must be a dead letter id")
    return int(value)


def topic_param(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > 300 or has_control_character(value):
        raise HTTPException(400, "topic must be a topic name")
    return value


async def dead_letter_list(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    status = request.query_params.get("status", "new")
    if status not in STATUSES:
        raise HTTPException(400, "status must be new, replayed or discarded")
    before = letter_id_param(request.query_params.get("before"), "before")
    topic = topic_param(request.query_params.get("topic"))
    size = console.config.page_size
    async with console.db.connect() as conn:
        rows = await list_dead_letters(
            conn, status=status, before_id=before, limit=size + 1, topic=topic
        )
        counts = await dead_letter_counts(conn)
    more = len(rows) > size
    rows = rows[:size]
    same = {"status": status, **({"topic": topic} if topic else {})}
    return console.render(
        request,
        "dead_letters.html",
        rows=rows,
        status=status,
        topic=topic,
        counts=counts,
        older_link=link(request, "dead_letter_list", {**same, "before": str(rows[-1]["id"])})
        if more
        else None,
        bulk_links={
            action: link(
                request, "dead_letter_bulk_confirm",
                {"action": action, **({"topic": topic} if topic else {})},
            )
            for action in LETTER_ACTIONS
        },
    )


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
        saga_id = str((letter["headers"] or {}).get("saga-id") or "")
        # A poison record may name a saga that never existed: shown, not linked.
        saga_known = await saga_exists(conn, saga_id)
        failed_again = await replays_that_failed(conn, letter["id"])
    try:
        value = orjson.loads(letter["value_text"])
    except orjson.JSONDecodeError:
        value = None
    done = request.query_params.get("done")
    return console.render(
        request,
        "dead_letter.html",
        letter=letter,
        value=value,
        saga_id=saga_id,
        saga_known=saga_known,
        failed_again=failed_again,
        done=done if done in LETTER_ACTIONS else None,
    )


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
    return RedirectResponse(
        link(request, "dead_letter_detail", {"done": action}, letter_id=letter_id), 303
    )
