"""Operator actions on one saga: retry, skip, abort or resume; each confirmed on a page first
(offered only where the saga's status allows it), applied by a CSRF-checked POST that answers 303
to the saga's page, which says what the saga did next. Bulk: console/views/bulk_actions.py."""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.action_outcome import outcome_of, refusal_for
from console.auth import require_operator
from console.csrf import check_csrf
from console.inputs import InputRefused, check_text, has_control_character, parse_result
from console.links import link
from console.queries.saga import get_saga
from console.skip_form import (
    FIELD_PREFIX,
    check_reply,
    reply_contract,
    reply_fields,
    result_from_fields,
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

BULK_ACTIONS = ("retry", "abort", "resume")


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
    # Nothing to confirm where the saga's status does not allow the action: say why instead.
    refusal = refusal_for(action, saga)
    return console.render(
        request,
        "confirm_action.html",
        status_code=409 if refusal else 200,
        refusal=refusal,
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


async def apply_with_retries(
    console: Console,
    saga_id: str,
    action: str,
    actor: str,
    step: str | None,
    result: dict[str, Any] | None,
    reason: str | None,
) -> Decision:
    """apply_action, again on the saga's new state when it moved while we acted (twice more)."""
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
        decision = await apply_with_retries(
            console, saga_id, action, user.name, step, result, reason
        )
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
    # The saga page says what followed, once (_action_outcome.html reads it); a reload of that
    # GET page repeats nothing.
    request.session["action_outcome"] = {
        "saga": saga_id, **outcome_of(decision, action, step).as_dict(),
    }
    return RedirectResponse(link(request, "saga_detail", {"done": action}, saga_id=saga_id), 303)


def _redisplayed(form: FormData, field: str, default: str, limit: int) -> str:
    """What the operator typed, to show again in the form (control characters, which the form
    refused, dropped; clipped to the limit)."""
    text = str(form.get(field, default))[:limit]
    return "".join(ch for ch in text if ch in "\n\t" or not has_control_character(ch))
