"""Operator actions: retry, skip, abort or resume one saga, and retry or abort every saga a
listing filter matches; each confirmed on a page first, then applied by a CSRF-checked POST."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.auth import require_operator
from console.csrf import check_csrf
from console.inputs import InputRefused, check_text, has_control_character, parse_result
from console.links import link
from console.queries.saga import get_saga
from console.queries.saga_list import AGE_LABELS, SagaFilter, count_sagas, matching_sagas
from console.skip_form import (
    FIELD_PREFIX,
    check_reply,
    reply_contract,
    reply_fields,
    result_from_fields,
    what_happened_next,
)
from console.state import ACTION_LABELS, Console, console_of
from orchestrator.engine.effects import Decision
from orchestrator.operator_actions import (
    ActionRejected,
    InvalidAction,
    SagaNotFound,
    apply_action,
)
from orchestrator.session import SagaConflict

log = logging.getLogger(__name__)

BULK_ACTIONS = ("retry", "abort")


def _action(request: Request) -> str:
    action = request.path_params["action"]
    if action not in ACTION_LABELS:
        raise HTTPException(404, f"no action {action!r}")
    return str(action)


async def action_confirm(request: Request) -> Response:
    require_operator(request)
    console = console_of(request)
    action = _action(request)
    saga_id = request.path_params["saga_id"]
    async with console.db.connect() as conn:
        saga = await get_saga(conn, saga_id)
    if saga is None:
        raise HTTPException(404, f"no saga {saga_id!r}")
    step = request.query_params.get("step") or saga.get("current_step") or ""
    state = saga.get("state") or {}
    return console.render(
        request,
        "confirm_action.html",
        saga=saga,
        action=action,
        step=step,
        step_names=list((state.get("steps") or {}).keys()),
        result_text=request.query_params.get("result", "{}"),
        **_skip_context(console, saga, action, step, None),
    )


def _skip_context(
    console: Console, saga: dict[str, Any], action: str, step: str, form: FormData | None
) -> dict[str, Any]:
    """What the Skip form shows for a step whose command has a contract: its reply's fields
    (and, after a refusal, what the operator typed in each)."""
    contract = reply_contract(console.registry, saga, step) if action == "skip" else None
    if contract is None:
        return {"reply_fields": [], "reply_model": None, "reply_values": {}}
    fields = reply_fields(contract)
    values = {
        f.name: _redisplayed(form, f.input_name, "", console.config.operator_text_max_chars)
        for f in fields
    } if form is not None else {}
    return {
        "reply_fields": fields,
        "reply_model": f"{contract.name} → {contract.reply.__name__}",
        "reply_values": values,
    }


async def _operator_input(
    console: Console, saga_id: str, action: str, form: FormData
) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The step, skip result and abort reason of an action form, checked alike on SQLite and
    PostgreSQL (console/inputs.py); a skip result is checked against the reply model of the
    step's contract, if any. InvalidAction names what is wrong (nothing is recorded)."""
    limit = console.config.operator_text_max_chars
    max_bytes = console.config.skip_result_max_bytes
    try:
        step = check_text(
            str(form.get("step", "")), field="the step", max_chars=200, multiline=False
        )
        reason = check_text(str(form.get("reason", "")), field="the reason", max_chars=limit)
        result = None
        if action == "skip":
            async with console.db.connect() as conn:
                saga = await get_saga(conn, saga_id)
            if saga is None:
                raise SagaNotFound(saga_id)
            contract = reply_contract(console.registry, saga, step)
            if contract is not None and any(k.startswith(FIELD_PREFIX) for k in form.keys()):
                result = result_from_fields(
                    reply_fields(contract), form, max_chars=limit, max_bytes=max_bytes
                )
            else:
                result = parse_result(str(form.get("result", "")), max_bytes=max_bytes)
            if contract is not None:
                check_reply(contract, result)
    except InputRefused as exc:
        raise InvalidAction(str(exc)) from exc
    return step or None, result, reason or None


async def _apply(
    console: Console,
    saga_id: str,
    action: str,
    actor: str,
    step: str | None,
    result: dict[str, Any] | None,
    reason: str | None,
) -> Decision:
    for attempt in range(3):
        try:
            return await apply_action(
                console.db,
                console.registry,
                console.topics,
                saga_id,
                action,
                actor=actor,
                step=step or None,
                result=result,
                reason=reason,
            )
        except SagaConflict:
            # The saga moved while we acted (a reply arrived): act on its new state.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def action_apply(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    action = _action(request)
    saga_id = request.path_params["saga_id"]
    step: str | None = None
    try:
        step, result, reason = await _operator_input(console, saga_id, action, form)
        decision = await _apply(console, saga_id, action, user.name, step, result, reason)
    except SagaNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (InvalidAction, ActionRejected, SagaConflict) as exc:
        async with console.db.connect() as conn:
            saga = await get_saga(conn, saga_id)
        if saga is None:
            raise HTTPException(404, f"no saga {saga_id!r}") from exc
        state = saga.get("state") or {}
        return console.render(
            request,
            "confirm_action.html",
            status_code=422 if isinstance(exc, InvalidAction) else 409,
            saga=saga,
            action=action,
            step=step or "",
            error=str(exc),
            step_names=list((state.get("steps") or {}).keys()),
            result_text=_redisplayed(form, "result", "{}", console.config.skip_result_max_bytes),
            reason_text=_redisplayed(form, "reason", "", console.config.operator_text_max_chars),
            **_skip_context(console, saga, action, str(form.get("step", ""))[:200], form),
        )
    log.info("console: %s applied %s to saga %s", user.name, action, saga_id)
    if action == "skip" and step:
        # The saga page says what followed (saga.html reads it once).
        request.session["action_outcome"] = {
            "saga": saga_id, "text": what_happened_next(decision, step),
        }
    return RedirectResponse(link(request, "saga_detail", {"done": action}, saga_id=saga_id), 303)


def _redisplayed(form: FormData, field: str, default: str, limit: int) -> str:
    """What the operator typed, to show again in the form (control characters, which the form
    refused, dropped; clipped to the limit)."""
    text = str(form.get(field, default))[:limit]
    return "".join(ch for ch in text if ch in "\n\t" or not has_control_character(ch))


def _bulk_action(value: str | None) -> str:
    if value not in BULK_ACTIONS:
        raise HTTPException(400, f"bulk action must be one of {', '.join(BULK_ACTIONS)}")
    return value


def _bulk_targets(action: str, filters: SagaFilter) -> SagaFilter | None:
    """The sagas a bulk action acts on: abort only ever touches running sagas (a filter on
    another status matches none), so the count confirmed is the set acted on."""
    if action != "abort":
        return filters
    if filters.status not in ("", "running"):
        return None
    return dataclasses.replace(filters, status="running")


async def bulk_confirm(request: Request) -> Response:
    require_operator(request)
    console = console_of(request)
    action = _bulk_action(request.query_params.get("action"))
    filters = SagaFilter.from_params(request.query_params)
    limit = console.config.bulk_limit
    targets = _bulk_targets(action, filters)
    count = 0
    if targets is not None:
        async with console.db.connect() as conn:
            count = await count_sagas(conn, targets, limit=limit)
    return console.render(
        request,
        "confirm_bulk.html",
        action=action,
        filters=filters,
        count=count,
        limit=limit,
        ages=AGE_LABELS,
    )


async def bulk_apply(request: Request) -> Response:
    user = require_operator(request)
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form)
    action = _bulk_action(str(form.get("action", "")))
    filters = SagaFilter.from_params({k: str(v) for k, v in form.items()})
    effective = _bulk_targets(action, filters)
    targets: list[dict[str, Any]] = []
    if effective is not None:
        async with console.db.connect() as conn:
            targets = await matching_sagas(conn, effective, limit=console.config.bulk_limit)
    applied, refused = 0, []
    for target in targets:
        step = target["current_step"] if action == "retry" else None
        try:
            await _apply(console, target["id"], action, user.name, step, None, None)
            applied += 1
        except (InvalidAction, ActionRejected, SagaConflict, SagaNotFound) as exc:
            refused.append((target["id"], str(exc)))
    log.info(
        "console: %s bulk %s: %d applied, %d refused", user.name, action, applied, len(refused)
    )
    return console.render(
        request,
        "bulk_done.html",
        action=action,
        applied=applied,
        refused=refused,
        back=link(request, "saga_list", filters.params()),
    )
