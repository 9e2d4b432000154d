"""What a saga author writes: `step(...)`, `compensation(...)`, `parallel(...)` and `Backoff`.

These are unvalidated declarations; `saga()` (in `orchestrator.dsl.validate`) checks them and
turns them into the `SagaDefinition` the engine runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from orchestrator.dsl.contracts import Command

Data = dict[str, Any]
PayloadBuilder = Callable[[Data], Data]
ReplyHandler = Callable[[Data, Data], Data]
Predicate = Callable[[Data], bool]
ResultBuilder = Callable[[Data], Data]

PayloadT = TypeVar("PayloadT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=BaseModel)
# The saga's state: its `state=` model, or the plain `Data` dict of an untyped saga.
StateT = TypeVar("StateT")
# A step invoking a contract: its payload builder returns the contract's payload model (or a
# mapping, validated against it) from the state; its reply handler gets the state and the
# contract's reply model, and returns the new state.
TypedPayloadBuilder = Callable[[StateT], PayloadT | Mapping[str, Any]]
TypedReplyHandler = Callable[[StateT, ReplyT], StateT]

# Used when neither the step nor the saga says otherwise.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before re-sending a timed-out command: `initial * multiplier**(n-1)`, capped at
    `max`, then shortened by up to `jitter` (a fraction, 0..1) so retries of many sagas spread."""

    initial: float = 1.0
    multiplier: float = 2.0
    max: float = 60.0
    jitter: float = 0.2

    def delay(self, retry: int, spread: float) -> float:
        """Seconds to wait before re-send number `retry` (1-based); `spread` is in [0, 1)."""
        base = min(self.max, self.initial * self.multiplier ** (retry - 1))
        return base * (1.0 - self.jitter * spread)


@dataclass(frozen=True, slots=True)
class Compensation:
    """The command that undoes a step (a name or a contract). Unset options inherit the
    step's."""

    command: str | Command[Any, Any]
    payload: Callable[[Any], Any] | None = None
    timeout: float | None = None
    retries: int | None = None
    backoff: Backoff | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction in a participant: `invoke` is `<service>.<verb>`. Unset retry
    options (None) take the saga's defaults."""

    name: str
    invoke: str | Command[Any, Any]
    payload: Callable[[Any], Any] | None = None
    on_reply: Callable[[Any, Any], Any] | None = None
    compensate: Compensation | None = None
    when: Callable[[Any], bool] | None = None
    timeout: float | None = None
    retries: int | None = None
    backoff: Backoff | None = None
    pivot: bool = False


@dataclass(frozen=True, slots=True)
class Parallel:
    """Branches sent together; the group succeeds when every branch does."""

    name: str
    branches: tuple[Step, ...]


@overload
def step(
    name: str,
    invoke: Command[PayloadT, ReplyT],
    *,
    payload: TypedPayloadBuilder[StateT, PayloadT] | None = None,
    on_reply: TypedReplyHandler[StateT, ReplyT] | None = None,
    compensate: str | Command[Any, Any] | Compensation | None = None,
    when: Callable[[StateT], bool] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
    pivot: bool = False,
) -> Step: ...


@overload
def step(
    name: str,
    invoke: str,
    *,
    payload: PayloadBuilder | None = None,
    on_reply: ReplyHandler | None = None,
    compensate: str | Command[Any, Any] | Compensation | None = None,
    when: Predicate | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
    pivot: bool = False,
) -> Step: ...


def step(
    name: str,
    invoke: str | Command[Any, Any],
    *,
    payload: Callable[[Any], Any] | None = None,
    on_reply: Callable[[Any, Any], Any] | None = None,
    compensate: str | Command[Any, Any] | Compensation | None = None,
    when: Callable[[Any], bool] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
    pivot: bool = False,
) -> Step:
    """Declare a step. `invoke` is a command name `<service>.<verb>` or a `Command` contract.
    `payload(data)` builds the command (default: the saga data; with a contract, a payload
    model or a mapping, checked against the contract); `on_reply(data, reply)` returns the new
    saga data (default: unchanged; with a contract, `reply` is the contract's reply model);
    `compensate` is a command name or contract (sent with the forward payload) or a
    `compensation(...)`; `when(data)` false skips the step. In a saga with `state=Model`,
    `data` is that model, and `on_reply` returns the new one. `pivot=True` marks the point of no
    return: the steps before it have compensations, the steps after it have none and are
    retried to completion. `timeout`, `retries` and `backoff` default to the saga's."""
    comp = Compensation(compensate) if isinstance(compensate, (str, Command)) else compensate
    return Step(
        name=name,
        invoke=invoke,
        payload=payload,
        on_reply=on_reply,
        compensate=comp,
        when=when,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        pivot=pivot,
    )


@overload
def compensation(
    command: Command[PayloadT, Any],
    *,
    payload: TypedPayloadBuilder[Any, PayloadT] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
) -> Compensation: ...


@overload
def compensation(
    command: str,
    *,
    payload: PayloadBuilder | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
) -> Compensation: ...


def compensation(
    command: str | Command[Any, Any],
    *,
    payload: Callable[[Any], Any] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
) -> Compensation:
    """Declare how a step is undone, when it needs its own payload or retry policy."""
    return Compensation(command, payload=payload, timeout=timeout, retries=retries, backoff=backoff)


def parallel(name: str, *branches: Step) -> Parallel:
    """Declare steps that run at once; if one fails, every branch that succeeded is undone."""
    return Parallel(name=name, branches=tuple(branches))
