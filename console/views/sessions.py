"""The Sessions page (operators only): who is logged in, from where, and which user names or
addresses are locked out after failed logins; revoking a session and lifting a lock, each a
CSRF-checked POST recorded in the operator audit trail (`operator_actions`, no saga)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import require_operator
from console.csrf import check_csrf
from console.inputs import has_control_character
from console.links import link
from console.login_throttle import MAX_SUBJECT, SCOPES
from console.state import console_of
from orchestrator.models import operator_actions

log = logging.getLogger(__name__)

REVOKE_SESSION, LIFT_LOCK = "revoke-session", "lift-login-lock"
SECURITY_ACTIONS = (REVOKE_SESSION, LIFT_LOCK)


async def record(
    engine: AsyncEngine,
    action: str,
    actor: str,
    target: tuple[str, str],
    params: dict[str, Any],
    detail: str,
) -> None:
    """An audit row for a console action that concerns no saga: filed under `target` (kind,
    id), such as ("session", its first 12 characters) or ("login-lock", "user alice")."""
    async with engine.begin() as conn:
        await conn.execute(
            operator_actions.insert().values(
                saga_id=None,
                target_kind=target[0],
                target_id=target[1],
                action=action,
                step=None,
                params=params,
                actor=actor,
                outcome="applied",
                detail=detail,
                created_at=datetime.now(UTC),
            )
        )


async def _recent_audit(engine: AsyncEngine) -> list[dict[str, Any]]:
    t = operator_actions.c
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(operator_actions)
            .where(t.action.in_(SECURITY_ACTIONS))
            .order_by(t.id.desc())
            .limit(50)
        )
        return [dict(r) for r in rows.mappings()]


async def sessions_page(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    assert console.session_store is not None and console.throttle is not None
    return console.render(
        request,
        "sessions.html",
        sessions=await console.session_store.active(),
        locks=await console.throttle.current(),
        audit=await _recent_audit(console.db),
        current_session=user.session,
        done=request.query_params.get("done", ""),
    )


async def session_revoke(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    assert console.session_store is not None
    handle = str(form.get("session", ""))
    if len(handle) != 64 or has_control_character(handle):
        raise HTTPException(404, "no such session")
    ended = await console.session_store.revoke(handle, user.name)
    if ended is None:
        raise HTTPException(404, "no such session, or it has already ended")
    await record(
        console.db,
        REVOKE_SESSION,
        user.name,
        ("session", handle[:12]),
        {"user": ended["user_name"], "session": handle[:12], "address": ended["address"]},
        f"ended a session of {ended['user_name']}",
    )
    log.info("console: %s revoked a session of %s", user.name, ended["user_name"])
    return RedirectResponse(link(request, "sessions", {"done": "revoked"}), 303)


async def lock_lift(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    assert console.throttle is not None
    scope, subject = str(form.get("scope", "")), str(form.get("subject", ""))
    if scope not in SCOPES or not subject or len(subject) > MAX_SUBJECT:
        raise HTTPException(400, "scope must be user or address, with a subject")
    if has_control_character(subject):
        raise HTTPException(400, "the subject holds a control character")
    if not await console.throttle.lift(scope, subject):
        raise HTTPException(404, f"no login lock on {scope} {subject!r}")
    await record(
        console.db,
        LIFT_LOCK,
        user.name,
        ("login-lock", f"{scope} {subject}"),
        {"scope": scope, "subject": subject},
        f"lifted the login lock on {scope} {subject}",
    )
    log.info("console: %s lifted the login lock on %s %r", user.name, scope, subject)
    return RedirectResponse(link(request, "sessions", {"done": "lifted"}), 303)
