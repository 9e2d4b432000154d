"""The audit page: every operator action — on sagas, dead letters, bulk actions, sessions —
filterable by operator, action and time (UTC), newest first, paged."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.inputs import has_control_character
from console.links import link
from console.queries.audit import AuditFilter, audit_page
from console.queries.saga_list import BadFilter
from console.state import console_of

# The actions the filter offers; any other action name can still be typed into the URL.
ACTIONS = (
    "retry", "skip", "abort", "resume", "replay-dlq", "discard-dlq",
    "bulk-retry", "bulk-abort", "bulk-resume", "bulk-replay-dlq", "bulk-discard-dlq",
    "revoke-session", "lift-login-lock",
)
MAX_ID = 2**63 - 1


def _text(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit or has_control_character(value):
        raise BadFilter(f"{name} must be at most {limit} characters, no control character")
    return value


def _time(value: str, name: str) -> datetime | None:
    """A `datetime-local` value (or any ISO time), read as UTC when it names no zone."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise BadFilter(f"{name} is not a time (YYYY-MM-DDTHH:MM, UTC)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _before(value: str) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_ID:
        raise BadFilter("before must be an audit entry id")
    return int(value)


async def audit(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    q = request.query_params
    filters = AuditFilter(
        actor=_text(q.get("actor", ""), "operator", 200),
        action=_text(q.get("action", ""), "action", 20),
        since=_time(q.get("since", ""), "since"),
        until=_time(q.get("until", ""), "until"),
    )
    before = _before(q.get("before", ""))
    size = console.config.page_size
    async with console.db.connect() as conn:
        rows = await audit_page(conn, filters, before_id=before, limit=size + 1)
    more = len(rows) > size
    rows = rows[:size]
    same = {k: q[k] for k in ("actor", "action", "since", "until") if q.get(k)}
    return console.render(
        request,
        "audit.html",
        rows=rows,
        values=same,
        actions=ACTIONS,
        actors=[u.name for u in console.config.users],
        older_link=link(request, "audit", {**same, "before": str(rows[-1]["id"])})
        if more
        else None,
        first_link=link(request, "audit", same) if before else None,
    )
