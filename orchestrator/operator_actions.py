"""Operator actions on one saga — retry a step, skip it with a result, abort, resume — each in
one transaction with its audit row (`operator_actions`: who, what, applied or refused).

The console calls `apply_action`; its typed errors map to HTTP there (404, 409, 422).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.engine.effects import Decision
from orchestrator.engine.events import Abort, Event, Resume, RetryStep, SkipStep
from orchestrator.models import operator_actions
from orchestrator.registry import SagaRegistry
from orchestrator.session import SagaSession
from sagaway.messaging.topics import TopicNames

ActionName = Literal["retry", "skip", "abort", "resume"]
ACTIONS: tuple[str, ...] = get_args(ActionName)
MAX_ACTOR = 200


class SagaNotFound(LookupError):
    """No saga has this id."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"no saga {saga_id!r}")


class InvalidAction(ValueError):
    """The request itself is malformed (unknown action, missing step, result not an object)."""


class ActionRejected(RuntimeError):
    """The saga is not in a state where the action applies; nothing changed (the refusal is
    recorded in the audit trail)."""

    def __init__(self, saga_id: str, action: str, reason: str) -> None:
        self.saga_id = saga_id
        self.action = action
        self.reason = reason
        super().__init__(f"cannot {action} saga {saga_id}: {reason}")


class DefinitionNotLoaded(ActionRejected):
    """The saga's definition version is not loaded in this process, so it cannot be advanced."""


def _event(
    action: str, step: str | None, result: Any, reason: str | None, now: float
) -> Event:
    if action not in ACTIONS:
        raise InvalidAction(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action in ("retry", "skip") and not step:
        raise InvalidAction(f"{action} needs the step to act on")
    if action == "retry":
        assert step is not None
        return RetryStep(step, now)
    if action == "skip":
        assert step is not None
        if not isinstance(result, dict):
            raise InvalidAction("skip needs a result that is a JSON object")
        return SkipStep(step, result, now)
    if action == "abort":
        return Abort(now, reason or "aborted by an operator")
    return Resume(now)


async def _audit(
    conn: AsyncConnection,
    saga_id: str,
    action: str,
    step: str | None,
    params: dict[str, Any] | None,
    actor: str,
    outcome: str,
    detail: str | None,
) -> None:
    await conn.execute(
        operator_actions.insert().values(
            saga_id=saga_id,
            action=action,
            step=step,
            params=params,
            actor=actor,
            outcome=outcome,
            detail=detail,
            created_at=datetime.now(UTC),
        )
    )


async def apply_action(
    engine: AsyncEngine,
    registry: SagaRegistry,
    topics: TopicNames,
    saga_id: str,
    action: ActionName | str,
    *,
    actor: str,
    step: str | None = None,
    result: dict[str, Any] | None = None,
    reason: str | None = None,
) -> Decision:
    """Apply an operator action to saga `saga_id` in one transaction and record who did it.

    Returns the engine's decision (new state, commands sent, final reply if it ended). Raises
    InvalidAction (bad request; nothing recorded), SagaNotFound, ActionRejected (recorded as
    refused; DefinitionNotLoaded when the saga's version is not loaded), or SagaConflict when
    the saga changed under it (retry)."""
    if not actor or len(actor) > MAX_ACTOR:
        raise InvalidAction(f"actor must be 1–{MAX_ACTOR} characters")
    event = _event(action, step, result, reason, time.time())
    params: dict[str, Any] | None = None
    if action == "skip":
        params = {"result": result}
    elif action == "abort" and reason:
        params = {"reason": reason}
    refusal: ActionRejected | None = None
    async with engine.begin() as conn:
        session = SagaSession(conn, registry, topics)
        await session.load([saga_id])
        saga = session.get(saga_id)
        if saga is None:
            raise SagaNotFound(saga_id)
        decision: Decision | None = None
        if saga.state is None:
            refusal = ActionRejected(saga_id, action, "the saga failed on arrival; nothing ran")
        elif saga.definition is None:
            session.report_unknown_definition(saga)
            refusal = DefinitionNotLoaded(
                saga_id,
                action,
                f"{saga.saga_type} version {saga.definition_version} is not loaded here",
            )
        else:
            decision = session.apply(saga_id, event)
            assert decision is not None
            if decision.rejected is not None:
                refusal = ActionRejected(saga_id, action, decision.rejected)
        if refusal is not None:
            await _audit(conn, saga_id, action, step, params, actor, "rejected", refusal.reason)
        else:
            assert decision is not None
            await session.flush()
            await _audit(
                conn, saga_id, action, step, params, actor, "applied",
                f"saga is {decision.state.status}",
            )
    if refusal is not None:
        raise refusal
    assert decision is not None
    return decision
