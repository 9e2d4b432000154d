"""How sagas are declared: `saga(...)` with `step(...)`, `parallel(...)` and `compensation(...)`.

A definition is plain data plus the saga's pure functions (payload builders, reply handlers,
predicates). Everything is validated when `saga()` is called, i.e. at import time, so a broken
saga stops the process that loads it with a message naming the saga, the step and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

Data = dict[str, Any]
PayloadBuilder = Callable[[Data], Data]
ReplyHandler = Callable[[Data, Data], Data]
Predicate = Callable[[Data], bool]
ResultBuilder = Callable[[Data], Data]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
COMMAND_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*$")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
MAX_RETRIES = 1000
MAX_TIMEOUT_S = 7 * 24 * 3600.0


class SagaDefinitionError(ValueError):
    """A saga declaration is invalid; the message names the saga, the step and the fix."""

    def __init__(self, saga: str, step: str | None, problem: str, fix: str) -> None:
        self.saga = saga
        self.step = step
        self.problem = problem
        self.fix = fix
        where = f"saga {saga!r}" + (f", step {step!r}" if step is not None else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}.")


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
    """The command that undoes a step. Unset options inherit the step's."""

    command: str
    payload: PayloadBuilder | None = None
    timeout: float | None = None
    retries: int | None = None
    backoff: Backoff | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction in a participant: `invoke` is `<service>.<verb>`."""

    name: str
    invoke: str
    payload: PayloadBuilder | None = None
    on_reply: ReplyHandler | None = None
    compensate: Compensation | None = None
    when: Predicate | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True, slots=True)
class Parallel:
    """Branches sent together; the group succeeds when every branch does."""

    name: str
    branches: tuple[Step, ...]


def step(
    name: str,
    invoke: str,
    *,
    payload: PayloadBuilder | None = None,
    on_reply: ReplyHandler | None = None,
    compensate: str | Compensation | None = None,
    when: Predicate | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    backoff: Backoff | None = None,
) -> Step:
    """Declare a step. `payload(data)` builds the command (default: the saga data);
    `on_reply(data, reply)` returns the new saga data (default: unchanged); `compensate` is a
    command name (sent with the forward payload) or a `compensation(...)`; `when(data)` false
    skips the step. A step without `compensate` is the pivot (the first one) or retriable."""
    comp = Compensation(compensate) if isinstance(compensate, str) else compensate
    return Step(
        name=name,
        invoke=invoke,
        payload=payload,
        on_reply=on_reply,
        compensate=comp,
        when=when,
        timeout=timeout,
        retries=retries,
        backoff=backoff if backoff is not None else Backoff(),
    )


def compensation(
    command: str,
    *,
    payload: PayloadBuilder | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Backoff | None = None,
) -> Compensation:
    """Declare how a step is undone, when it needs its own payload or retry policy."""
    return Compensation(command, payload=payload, timeout=timeout, retries=retries, backoff=backoff)


def parallel(name: str, *branches: Step) -> Parallel:
    """Declare steps that run at once; if one fails, every branch that succeeded is undone."""
    return Parallel(name=name, branches=tuple(branches))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The resolved timeout/retry settings of one command (forward or compensation)."""

    timeout: float
    retries: int
    backoff: Backoff


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A validated step, as the engine sees it."""

    name: str
    element: int
    command: str
    payload: PayloadBuilder | None
    on_reply: ReplyHandler | None
    when: Predicate | None
    policy: RetryPolicy
    compensation_command: str | None
    compensation_payload: PayloadBuilder | None
    compensation_policy: RetryPolicy | None

    @property
    def compensatable(self) -> bool:
        return self.compensation_command is not None


@dataclass(frozen=True, slots=True)
class Element:
    """A position in the saga: one step, or one parallel group of branches."""

    index: int
    name: str
    steps: tuple[StepSpec, ...]
    is_group: bool


@dataclass(frozen=True, slots=True, eq=False)
class SagaDefinition:
    """A validated saga: build it with `saga(...)`, never directly."""

    saga_type: str
    version: int
    elements: tuple[Element, ...]
    steps: Mapping[str, StepSpec]
    pivot: int | None
    input_model: type[BaseModel] | None
    result: ResultBuilder | None
    description: str

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(self.steps)

    def input_schema(self) -> dict[str, Any]:
        """The JSON schema of the input, for the gateway's OpenAPI document."""
        if self.input_model is None:
            return {"type": "object"}
        return self.input_model.model_json_schema()

    def validate_input(self, body: Any) -> Data:
        """Check a request body against the input model and return the saga's first data.

        Raises `pydantic.ValidationError` (the gateway answers 422) or `TypeError` when the
        body is not a JSON object and there is no model."""
        if self.input_model is None:
            if not isinstance(body, dict):
                raise TypeError(f"saga {self.saga_type!r} takes a JSON object")
            return dict(body)
        return self.input_model.model_validate(body).model_dump(mode="json")

    def __repr__(self) -> str:
        return f"SagaDefinition({self.saga_type!r}, version={self.version})"


def saga(
    saga_type: str,
    *,
    version: int,
    steps: Sequence[Step | Parallel],
    input: type[BaseModel] | None = None,
    result: ResultBuilder | None = None,
    description: str = "",
) -> SagaDefinition:
    """Declare and validate a saga. `steps` run top to bottom; `input` is the Pydantic model
    the gateway checks bodies against; `result(data)` builds the answer (default: the data)."""
    if not isinstance(saga_type, str) or not NAME_PATTERN.match(saga_type):
        raise SagaDefinitionError(
            str(saga_type), None, "the saga type is not a valid name",
            "use letters, digits, '-', '_' or '.', starting with a letter or digit (max 200)",
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SagaDefinitionError(
            saga_type, None, f"version must be an integer >= 1, got {version!r}",
            "pass version=1 and raise it for each incompatible change",
        )
    if input is not None and not (isinstance(input, type) and issubclass(input, BaseModel)):
        raise SagaDefinitionError(
            saga_type, None, f"input must be a pydantic model class, got {input!r}",
            "declare `class MyInput(pydantic.BaseModel): ...` and pass input=MyInput",
        )
    if result is not None and not callable(result):
        raise SagaDefinitionError(
            saga_type, None, "result is not callable", "pass a function data -> dict"
        )
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise SagaDefinitionError(
            saga_type, None, "the saga has no steps",
            "pass steps=[step('name', invoke='service.verb'), ...]",
        )

    seen: set[str] = set()
    elements: list[Element] = []
    specs: dict[str, StepSpec] = {}
    pivot: int | None = None
    for index, item in enumerate(steps):
        if isinstance(item, Step):
            _check_name(saga_type, item.name, seen, "step")
            spec = _validate_step(saga_type, item, index)
            elements.append(Element(index, item.name, (spec,), is_group=False))
            specs[spec.name] = spec
        elif isinstance(item, Parallel):
            _check_name(saga_type, item.name, seen, "parallel group")
            if not item.branches:
                raise SagaDefinitionError(
                    saga_type, item.name, "the parallel group is empty",
                    "give parallel(name, step(...), step(...)) at least one branch",
                )
            branch_specs: list[StepSpec] = []
            for branch in item.branches:
                if not isinstance(branch, Step):
                    raise SagaDefinitionError(
                        saga_type, item.name,
                        f"a parallel branch must be a step(...), got {type(branch).__name__}",
                        "nest only step(...) calls inside parallel(...)",
                    )
                _check_name(saga_type, branch.name, seen, "step")
                branch_specs.append(_validate_step(saga_type, branch, index))
            elements.append(Element(index, item.name, tuple(branch_specs), is_group=True))
            specs.update((s.name, s) for s in branch_specs)
        else:
            raise SagaDefinitionError(
                saga_type, None, f"steps[{index}] is a {type(item).__name__}, not a step",
                "list only step(...) and parallel(...) in steps=[...]",
            )
        element = elements[-1]
        without = [s for s in element.steps if not s.compensatable]
        if pivot is None:
            if not without:
                continue
            if element.is_group:
                raise SagaDefinitionError(
                    saga_type, without[0].name,
                    f"the first step without a compensation is the pivot, and here it is a "
                    f"branch of parallel group {element.name!r}",
                    "give every branch of the group a compensation, or make the pivot a single "
                    "step before the group",
                )
            if element.steps[0].when is not None:
                raise SagaDefinitionError(
                    saga_type, element.name,
                    "the pivot (the first step without a compensation) cannot be conditional",
                    "remove when=..., or give the step a compensation",
                )
            pivot = index
        else:
            with_comp = [s for s in element.steps if s.compensatable]
            if with_comp:
                raise SagaDefinitionError(
                    saga_type, with_comp[0].name,
                    f"a step after the pivot {elements[pivot].name!r} has a compensation, but "
                    "after the pivot a saga only goes forward",
                    "remove its compensation (it must be retriable), or move it before the pivot",
                )
    return SagaDefinition(
        saga_type=saga_type,
        version=version,
        elements=tuple(elements),
        steps=specs,
        pivot=pivot,
        input_model=input,
        result=result,
        description=description,
    )


def _check_name(saga_type: str, name: Any, seen: set[str], what: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SagaDefinitionError(
            saga_type, str(name), f"the {what} name is not valid",
            "use letters, digits, '-', '_' or '.', starting with a letter or digit (max 200)",
        )
    if name in seen:
        raise SagaDefinitionError(
            saga_type, name, f"the name is used twice (as a {what} here)",
            "give every step and parallel group a unique name",
        )
    seen.add(name)


def _validate_step(saga_type: str, item: Step, index: int) -> StepSpec:
    name = item.name
    _check_command(saga_type, name, item.invoke, "invoke")
    for attr in ("payload", "on_reply", "when"):
        value = getattr(item, attr)
        if value is not None and not callable(value):
            raise SagaDefinitionError(
                saga_type, name, f"{attr} is not callable",
                f"pass a function for {attr}=..., or leave it out",
            )
    policy = _policy(saga_type, name, item.timeout, item.retries, item.backoff)
    comp = item.compensate
    comp_policy: RetryPolicy | None = None
    comp_command: str | None = None
    comp_payload: PayloadBuilder | None = None
    if comp is not None:
        if not isinstance(comp, Compensation):
            raise SagaDefinitionError(
                saga_type, name, f"compensate must be a command name or compensation(...), "
                f"got {type(comp).__name__}", "pass compensate='service.verb'",
            )
        _check_command(saga_type, name, comp.command, "compensate")
        if comp.payload is not None and not callable(comp.payload):
            raise SagaDefinitionError(
                saga_type, name, "the compensation payload is not callable",
                "pass a function data -> dict for compensation(..., payload=...)",
            )
        comp_command = comp.command
        comp_payload = comp.payload if comp.payload is not None else item.payload
        comp_policy = _policy(
            saga_type, name,
            comp.timeout if comp.timeout is not None else item.timeout,
            comp.retries if comp.retries is not None else item.retries,
            comp.backoff if comp.backoff is not None else item.backoff,
            what="compensation ",
        )
    return StepSpec(
        name=name,
        element=index,
        command=item.invoke,
        payload=item.payload,
        on_reply=item.on_reply,
        when=item.when,
        policy=policy,
        compensation_command=comp_command,
        compensation_payload=comp_payload,
        compensation_policy=comp_policy,
    )


def _check_command(saga_type: str, step_name: str, command: Any, what: str) -> None:
    if not isinstance(command, str) or not COMMAND_PATTERN.match(command):
        raise SagaDefinitionError(
            saga_type, step_name, f"{what}={command!r} is not a command name <service>.<verb>",
            f"write it as {what}='inventory.reserve' (one dot; letters, digits, '-', '_')",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _policy(
    saga_type: str, name: str, timeout: Any, retries: Any, backoff: Any, what: str = ""
) -> RetryPolicy:
    if not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise SagaDefinitionError(
            saga_type, name, f"{what}timeout={timeout!r} is out of range",
            f"give a number of seconds > 0 and <= {MAX_TIMEOUT_S:g}",
        )
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise SagaDefinitionError(
            saga_type, name, f"{what}retries={retries!r} is out of range",
            f"give an integer from 0 (no re-send) to {MAX_RETRIES}",
        )
    if not isinstance(backoff, Backoff):
        raise SagaDefinitionError(
            saga_type, name, f"{what}backoff must be a Backoff(...), got {type(backoff).__name__}",
            "pass backoff=Backoff(initial=1, multiplier=2, max=60, jitter=0.2)",
        )
    problems = []
    if not _is_number(backoff.initial) or backoff.initial < 0:
        problems.append(f"initial={backoff.initial!r} must be >= 0")
    if not _is_number(backoff.multiplier) or backoff.multiplier < 1:
        problems.append(f"multiplier={backoff.multiplier!r} must be >= 1")
    if (
        not _is_number(backoff.max)
        or not _is_number(backoff.initial)
        or backoff.max < backoff.initial
    ):
        problems.append(f"max={backoff.max!r} must be >= initial")
    if not _is_number(backoff.jitter) or not 0 <= backoff.jitter <= 1:
        problems.append(f"jitter={backoff.jitter!r} must be between 0 and 1")
    if problems:
        raise SagaDefinitionError(
            saga_type, name, f"{what}backoff is out of range: " + "; ".join(problems),
            "use e.g. Backoff(initial=1, multiplier=2, max=60, jitter=0.2)",
        )
    return RetryPolicy(timeout=float(timeout), retries=retries, backoff=backoff)


__all__ = [
    "Backoff",
    "Compensation",
    "Element",
    "Parallel",
    "RetryPolicy",
    "SagaDefinition",
    "SagaDefinitionError",
    "Step",
    "StepSpec",
    "compensation",
    "parallel",
    "saga",
    "step",
]
