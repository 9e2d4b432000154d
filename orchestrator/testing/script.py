"""What a scripted participant does with a command: reply, refuse, time out, reply twice or
reply late. `run_saga` (in `orchestrator.testing.run`) plays these against the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Payload = dict[str, Any]
Answer = Mapping[str, Any] | Callable[[Payload], Mapping[str, Any]]
Outcome = Literal["success", "failure"]

# Seconds between a command and its reply, in the harness's virtual time: replies arrive long
# before any timeout unless the script says otherwise.
DEFAULT_DELAY_S = 0.01
# How long after the attempt's timeout a late reply arrives.
LATE_BY_S = 0.001


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a participant answers one attempt of a command.

    `outcome` None means it never answers; `copies` > 1 delivers the same reply that many
    times; `late` delivers it just after the attempt's timeout fired, else after `delay`."""

    outcome: Outcome | None
    answer: Answer
    copies: int = 1
    late: bool = False
    delay: float = DEFAULT_DELAY_S

    def payload(self, command_payload: Payload) -> Payload:
        """The reply's payload; a callable answer is given the command's payload."""
        answer = self.answer(command_payload) if callable(self.answer) else self.answer
        return dict(answer)


# A command's script: one behaviour for every attempt, or one per attempt (the last repeats).
Script = Behaviour | Sequence[Behaviour]


def reply(answer: Answer | None = None, *, delay: float = DEFAULT_DELAY_S) -> Behaviour:
    """Succeed with `answer` (a dict, or a function of the command's payload; default `{}`)."""
    return Behaviour("success", {} if answer is None else answer, delay=delay)


def refuse(
    reason: str = "refused", *, delay: float = DEFAULT_DELAY_S, **fields: Any
) -> Behaviour:
    """Fail on business grounds: a failure reply `{"reason": reason, **fields}`."""
    return Behaviour("failure", {"reason": reason, **fields}, delay=delay)


def time_out() -> Behaviour:
    """Never answer this attempt: its timeout fires (then the engine re-sends or gives up)."""
    return Behaviour(None, {})


def reply_twice(answer: Answer | None = None, *, delay: float = DEFAULT_DELAY_S) -> Behaviour:
    """Succeed, and have the reply delivered twice (the broker redelivered it)."""
    return Behaviour("success", {} if answer is None else answer, copies=2, delay=delay)


def reply_late(answer: Answer | None = None, *, outcome: Outcome = "success") -> Behaviour:
    """Answer, but only after the attempt's timeout fired: the engine ignores the reply (it
    already re-sent, or gave up). Script the next attempt to see the re-send answered:
    `[reply_late(r), reply(r)]`."""
    return Behaviour(outcome, {} if answer is None else answer, late=True)


def for_attempt(script: Script, attempt: int) -> Behaviour:
    """The behaviour for attempt `attempt` (1-based): the last one repeats."""
    if isinstance(script, Behaviour):
        return script
    if not script:
        raise ValueError("a command's script is an empty list: give at least one behaviour")
    return script[min(attempt, len(script)) - 1]
