"""Bulk retry, abort or resume of the sagas a listing filter matches: the confirmation lists the
sagas it will act on (paged) and what it skips and why; the POST records the bulk action, acts,
and answers 303 to its result page (console/bulk.py), so a refresh repeats nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import bulk
from console.action_outcome import ALLOWED_STATUSES, WHY_NOT, outcome_of
from console.auth import require_operator, require_user
from console.csrf import check_csrf
from console.links import link
from console.queries.bulk import (
    BulkTargets,
    all_targets,
    count_targets,
    skipped_by_status,
    target_page,
)
from console.queries.saga_list import AGE_LABELS, BadFilter, Cursor, SagaFilter
from console.state import Console, console_of
from console.views.actions import BULK_ACTIONS, apply_with_retries
from orchestrator.operator_actions import (
    ActionRejected,
    InvalidAction,
    SagaNotFound,
)
from orchestrator.session import SagaConflict

log = logging.getLogger(__name__)


def _bulk_action(value: str | None) -> str:
    if value not in BULK_ACTIONS:
        raise HTTPException(400, f"bulk action must be one of {', '.join(BULK_ACTIONS)}")
    return value


def _until(value: str | None, now: datetime) -> datetime:
    """The confirmation's moment: sagas created later are neither listed nor acted on."""
    if not value:
        return now
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadFilter(f"not a time: {value[:40]!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _targets(action: str, filters: SagaFilter, until: datetime) -> BulkTargets:
    return BulkTargets(filters, ALLOWED_STATUSES[action], until)


async def bulk_confirm(request: Request) -> Response:
    require_operator(request)
    console = console_of(request)
    params = request.query_params
    action = _bulk_action(params.get("action"))
    filters = SagaFilter.from_params(params)
    now = datetime.now(UTC)
    until = _until(params.get("until"), now)
    before = Cursor.decode(params["before"]) if params.get("before") else None
    limit = console.config.bulk_limit
    targets = _targets(action, filters, until)
    async with console.db.connect() as conn:
        count = await count_targets(conn, targets, limit=limit, now=now)
        skipped = await skipped_by_status(conn, targets, limit=limit, now=now)
        rows, older = await target_page(
            conn, targets, page_size=console.config.page_size, before=before, now=now
        )
    same = {**filters.params(), "action": action, "until": until.isoformat()}
    return console.render(
        request,
        "confirm_bulk.html",
        action=action,
        filters=filters,
        count=count,
        skipped=skipped,
        why_skipped=WHY_NOT[action],
        rows=rows,
        older_link=link(request, "bulk_confirm", {**same, "before": older.encode()})
        if older
        else None,
        first_link=link(request, "bulk_confirm", same) if before else None,
        until=until.isoformat(),
        form_id=bulk.new_form_id(),
        limit=limit,
        ages=AGE_LABELS,
    )


async def _act_on_each(
    console: Console, action: str, targets: list[dict[str, Any]], actor: str
) -> list[dict[str, Any]]:
    """Apply `action` to each target in turn; a refusal is listed, not fatal."""
    results: list[dict[str, Any]] = []
    for target in targets:
        step = target["current_step"] if action == "retry" else None
        try:
            decision = await apply_with_retries(
                console, target["id"], action, actor, step, None, None
            )
        except (InvalidAction, ActionRejected, SagaConflict, SagaNotFound) as exc:
            results.append({
                "id": target["id"], "outcome": "refused", "status": target["status"],
                "headline": "refused", "text": str(exc),
            })
            continue
        results.append({
            "id": target["id"], "outcome": "applied",
            **outcome_of(decision, action, step).as_dict(),
        })
    return results


async def bulk_apply(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    fields = {k: str(v) for k, v in form.items()}
    action = _bulk_action(fields.get("action"))
    filters = SagaFilter.from_params(fields)
    form_id = fields.get("form_id", "")
    if not fields.get("until") or not bulk.valid_form_id(form_id):
        raise HTTPException(400, "a bulk action is sent from its confirmation page")
    already = await bulk.started(console.db, form_id)
    if already is not None:
        return RedirectResponse(link(request, "bulk_result", audit_id=already), 303)
    now = datetime.now(UTC)
    until = _until(fields["until"], now)
    async with console.db.connect() as conn:
        targets = await all_targets(
            conn, _targets(action, filters, until), limit=console.config.bulk_limit, now=now
        )
    params = {
        "kind": "sagas", "filter": filters.params(), "until": until.isoformat(),
        "count": len(targets),
    }
    audit_id = await bulk.start(
        console.db, action=action, actor=user.name, form_id=form_id, params=params
    )
    results = await _act_on_each(console, action, targets, user.name)
    await bulk.finish(console.db, audit_id, params, results)
    log.info(
        "console: %s bulk %s on %d sagas (audit %d)", user.name, action, len(targets), audit_id
    )
    return RedirectResponse(link(request, "bulk_result", audit_id=audit_id), 303)


async def bulk_result(request: Request) -> Response:
    """What a bulk action did, read back from its audit row (saga or dead-letter bulk)."""
    require_user(request)
    console = console_of(request)
    audit_id = int(request.path_params["audit_id"])
    entry = await bulk.load(console.db, audit_id) if audit_id <= bulk.MAX_ID else None
    if entry is None:
        raise HTTPException(404, f"no bulk action {audit_id}")
    params = entry.get("params") or {}
    results = list(params.get("results") or [])
    if params.get("kind") == "dead-letters":
        back = link(request, "dead_letter_list", {"status": "new"})
    else:
        back = link(request, "saga_list", dict(params.get("filter") or {}))
    return console.render(
        request,
        "bulk_done.html",
        entry=entry,
        action=str(entry["action"]).removeprefix("bulk-").removesuffix("-dlq"),
        kind=params.get("kind", "sagas"),
        results=results,
        applied=sum(1 for r in results if r.get("outcome") == "applied"),
        refused=[r for r in results if r.get("outcome") != "applied"],
        back=back,
    )
