"""What a saga did after an operator acted on it, in words and in the colour of its new status:
"now compensating", "completed", "retrying step charge-card" — from the engine's decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from console.skip_form import what_happened_next
from orchestrator.engine.effects import Decision

# The statuses an action can apply to: offered (and confirmed) only there.
ALLOWED_STATUSES: dict[str, tuple[str, ...]] = {
    "retry": ("running", "compensating"),
    "skip": ("running", "compensating"),
    "abort": ("running",),
    "resume": ("failed",),
}
WHY_NOT = {
    "retry": "only a running or compensating saga has a step to retry",
    "skip": "only a running or compensating saga has a step to skip",
    "abort": "only a running saga can be aborted",
    "resume": "only a failed saga can be resumed",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One action's result: the status it left (the colour), a headline and a sentence."""

    status: str
    headline: str
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refusal_for(action: str, saga: Mapping[str, Any]) -> str | None:
    """Why `action` cannot apply to this saga row (None: it may, as far as its row tells)."""
    status = str(saga.get("status"))
    allowed = ALLOWED_STATUSES.get(action)
    if allowed is not None and status not in allowed:
        return f"the saga is {status}: {WHY_NOT[action]}"
    if action == "abort" and (saga.get("state") or {}).get("pivot_passed"):
        return "its pivot step has succeeded: the saga can only go forward"
    return None


def _headline(action: str, step: str | None, decision: Decision) -> str:
    status = decision.state.status
    if decision.final is not None:
        return decision.final.status
    if status == "compensating":
        return "now compensating"
    retried = [c for c in decision.commands if c.kind == "forward"]
    if action == "retry" and step:
        return f"retrying step {step}"
    if action == "resume" and retried:
        return f"retrying step {retried[0].step}"
    return str(status)


def outcome_of(decision: Decision, action: str, step: str | None) -> Outcome:
    """What the saga did next, from the decision `apply_action` returned."""
    status = decision.final.status if decision.final is not None else decision.state.status
    headline = _headline(action, step, decision)
    if action == "skip" and step:
        return Outcome(status, headline, what_happened_next(decision, step))
    if decision.final is not None:
        return Outcome(status, headline, f"The saga then ended {decision.final.status}.")
    sent = [
        f"{c.command} (compensation of {c.step}, attempt {c.attempt})"
        if c.kind == "compensation"
        else f"{c.command} (step {c.step}, attempt {c.attempt})"
        for c in decision.commands
    ]
    if sent:
        return Outcome(
            status, headline, f"The saga then sent {', '.join(sent)} and is {status}."
        )
    return Outcome(status, headline, f"The saga is {status}.")
