"""What a decision asks the shell to do: commands to send, timers to set, step rows to write and
the final answer, together with the new state in a `Decision`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.engine.state import Kind, SagaState

TimerKind = Literal["timeout", "backoff"]


@dataclass(frozen=True, slots=True)
class Command:
    """A command to put in the outbox (topic `<service>.requests`)."""

    step: str
    kind: Kind
    command: str
    payload: dict[str, Any]
    message_id: str
    attempt: int

    @property
    def service(self) -> str:
        return self.command.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer to store; when due, the shell feeds it back as `TimerFired` with these fields."""

    kind: TimerKind
    step: str
    step_kind: Kind
    attempt: int
    due: float


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One row for `saga_steps`: what happened to a step attempt, or why a reply was ignored."""

    step: str
    kind: Kind
    status: Literal["sent", "succeeded", "failed", "timed_out", "ignored", "skipped"]
    attempt: int
    message_id: str | None
    payload: dict[str, Any] | None = None
    error: str | None = None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Final:
    """The saga reached a terminal status: what to answer the client."""

    status: Literal["completed", "compensated", "failed"]
    result: dict[str, Any] | None
    failure: dict[str, Any] | None


@dataclass(slots=True)
class Decision:
    """What `decide` says: the new state and the effects for the shell to carry out."""

    state: SagaState
    commands: list[Command] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    step_records: list[StepRecord] = field(default_factory=list)
    final: Final | None = None
    rejected: str | None = None
