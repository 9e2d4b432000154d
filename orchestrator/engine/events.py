"""The events `decide` accepts: the saga starts, a participant replies, a timer fires, or an
operator acts. Each carries `now`, so the engine never reads a clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.engine.effects import TimerKind
from orchestrator.engine.state import Kind


@dataclass(frozen=True, slots=True)
class Start:
    """Begin the saga (its data was given to `new_saga`)."""

    now: float


@dataclass(frozen=True, slots=True)
class Reply:
    """A participant answered: `causation_id` is the command's message id, `attempt` its try."""

    step: str
    causation_id: str
    attempt: int
    outcome: Literal["success", "failure"]
    payload: dict[str, Any]
    now: float


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer set by an earlier decision is due (the shell passes back the Timer's fields)."""

    kind: TimerKind
    step: str
    step_kind: Kind
    attempt: int
    now: float


@dataclass(frozen=True, slots=True)
class RetryStep:
    """Operator: re-send the awaiting (or failed) command of `step` now."""

    step: str
    now: float


@dataclass(frozen=True, slots=True)
class SkipStep:
    """Operator: treat the awaiting (or failed) command of `step` as succeeded with `result`."""

    step: str
    result: dict[str, Any]
    now: float


@dataclass(frozen=True, slots=True)
class Abort:
    """Operator: stop going forward and compensate now (refused once the pivot succeeded)."""

    now: float
    reason: str = "aborted by an operator"


@dataclass(frozen=True, slots=True)
class Resume:
    """Operator: a `failed` saga re-sends what failed, with a fresh retry budget."""

    now: float


Event = Start | Reply | TimerFired | RetryStep | SkipStep | Abort | Resume
