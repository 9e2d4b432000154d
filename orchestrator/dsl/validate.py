"""`saga()`: validate a declaration and build the `SagaDefinition` the engine runs.

Everything is checked when `saga()` is called, i.e. at import time, so a broken saga stops the
process that loads it with a message naming the saga, the step and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.dsl.adapt import (
    StateModel,
    compensation_payload,
    forward_payload,
    reply_handler,
)
from orchestrator.dsl.contracts import CONTRACT_NAME, Command
from orchestrator.dsl.declare import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Backoff,
    Compensation,
    Parallel,
    Step,
)
from orchestrator.dsl.definition import (
    Element,
    RetryPolicy,
    SagaDefinition,
    SagaDefinitionError,
    StepSpec,
)
from orchestrator.dsl.pivot import find_pivot

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
COMMAND_PATTERN = CONTRACT_NAME
MAX_RETRIES = 1000
MAX_TIMEOUT_S = 7 * 24 * 3600.0


def saga(
    saga_type: str,
    *,
    version: int,
    steps: Sequence[Step | Parallel],
    input: type[BaseModel] | None = None,
    state: type[BaseModel] | None = None,
    result: Callable[[Any], Any] | None = None,
    description: str = "",
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    backoff: Backoff | None = None,
    search_keys: Sequence[str] = (),
) -> SagaDefinition:
    """Declare and validate a saga. `steps` run top to bottom; `input` is the Pydantic model
    the gateway checks bodies against; `state` the model of the saga's data, which starts
    as the input (each step's functions get it, and `on_reply` returns the next one);
    `result(data)` builds the answer (default: the data).
    `timeout`, `retries` and `backoff` are the defaults of every step that does not set its
    own (and, through the step, of its compensation). `search_keys` names input fields
    stored when a saga starts, so that operators find it by them in the console."""
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
    typed = _state_model(saga_type, state, input)
    keys = _search_keys(saga_type, search_keys, input)
    if result is not None and not callable(result):
        raise SagaDefinitionError(
            saga_type, None, "result is not callable", "pass a function data -> dict"
        )
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise SagaDefinitionError(
            saga_type, None, "the saga has no steps",
            "pass steps=[step('name', invoke='service.verb'), ...]",
        )

    defaults = _policy(
        saga_type, None, timeout, retries, backoff if backoff is not None else Backoff()
    )

    seen: set[str] = set()
    elements: list[Element] = []
    specs: dict[str, StepSpec] = {}
    marked: set[str] = set()
    for index, item in enumerate(steps):
        if isinstance(item, Step):
            _check_name(saga_type, item.name, seen, "step")
            spec = _validate_step(saga_type, item, index, defaults, marked, typed)
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
                branch_specs.append(
                    _validate_step(saga_type, branch, index, defaults, marked, typed)
                )
            elements.append(Element(index, item.name, tuple(branch_specs), is_group=True))
            specs.update((s.name, s) for s in branch_specs)
        else:
            raise SagaDefinitionError(
                saga_type, None, f"steps[{index}] is a {type(item).__name__}, not a step",
                "list only step(...) and parallel(...) in steps=[...]",
            )
    return SagaDefinition(
        saga_type=saga_type,
        version=version,
        elements=tuple(elements),
        steps=specs,
        pivot=find_pivot(saga_type, elements, marked),
        input_model=input,
        result=typed.result(result) if typed is not None else result,
        description=description,
        defaults=defaults,
        state_model=state,
        search_keys=keys,
    )


def _search_keys(
    saga_type: str, search_keys: Any, input: type[BaseModel] | None
) -> tuple[str, ...]:
    """The declared search keys: unique field names, each a field of the input model if any."""
    if isinstance(search_keys, (str, bytes)) or not isinstance(search_keys, Sequence):
        raise SagaDefinitionError(
            saga_type, None, f"search_keys must be a sequence of field names, got {search_keys!r}",
            "pass search_keys=('customer_id',)",
        )
    keys = tuple(search_keys)
    for name in keys:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise SagaDefinitionError(
                saga_type, None, f"search key {name!r} is not a valid field name",
                "name a top-level field of the input, e.g. search_keys=('customer_id',)",
            )
        if input is not None and name not in input.model_fields:
            raise SagaDefinitionError(
                saga_type, None,
                f"search key {name!r} is not a field of the input {input.__name__}",
                f"use one of {', '.join(input.model_fields)}",
            )
    if len(set(keys)) != len(keys):
        raise SagaDefinitionError(
            saga_type, None, "a search key is named twice", "name each search key once"
        )
    return keys


def _state_model(
    saga_type: str, state: Any, input: type[BaseModel] | None
) -> StateModel | None:
    """The typed state, checked to start from the input: every field it requires is one the
    input has."""
    if state is None:
        return None
    if not (isinstance(state, type) and issubclass(state, BaseModel)):
        raise SagaDefinitionError(
            saga_type, None, f"state must be a pydantic model class, got {state!r}",
            "declare `class MyState(MyInput): ...` with the fields the steps add, "
            "and pass state=MyState",
        )
    given = set(input.model_fields) if input is not None else None
    missing = [
        name for name, field in state.model_fields.items()
        if field.is_required() and given is not None and name not in given
    ]
    if missing and input is not None:
        raise SagaDefinitionError(
            saga_type, None,
            f"the state {state.__name__} requires {', '.join(missing)}, which the input "
            f"{input.__name__} does not have",
            "give the fields the steps add a default (`reservation_id: str | None = None`)",
        )
    return StateModel(state)


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


def _validate_step(
    saga_type: str,
    item: Step,
    index: int,
    defaults: RetryPolicy,
    marked: set[str],
    typed: StateModel | None,
) -> StepSpec:
    """Check one step and resolve its policies: compensation option, else the step's, else the
    saga's default. With a typed state, its functions are given the state model."""
    name = item.name
    if not isinstance(item.pivot, bool):
        raise SagaDefinitionError(
            saga_type, name, f"pivot={item.pivot!r} is not a bool",
            "pass pivot=True on the pivot step only, or leave it out",
        )
    if item.pivot:
        marked.add(name)
    command = _check_command(saga_type, name, item.invoke, "invoke")
    contract = item.invoke if isinstance(item.invoke, Command) else None
    for attr in ("payload", "on_reply", "when"):
        value = getattr(item, attr)
        if value is not None and not callable(value):
            raise SagaDefinitionError(
                saga_type, name, f"{attr} is not callable",
                f"pass a function for {attr}=..., or leave it out",
            )
    policy = _policy(
        saga_type, name,
        item.timeout if item.timeout is not None else defaults.timeout,
        item.retries if item.retries is not None else defaults.retries,
        item.backoff if item.backoff is not None else defaults.backoff,
    )
    comp = item.compensate
    own_payload, on_reply, when = item.payload, item.on_reply, item.when
    if typed is not None:
        own_payload, on_reply, when = (
            typed.payload(own_payload), typed.handler(on_reply), typed.builder(when)
        )
    payload = forward_payload(contract, own_payload)
    comp_policy: RetryPolicy | None = None
    comp_command: str | None = None
    comp_contract: Command[Any, Any] | None = None
    comp_payload = None
    if comp is not None:
        if not isinstance(comp, Compensation):
            raise SagaDefinitionError(
                saga_type, name, f"compensate must be a command name or compensation(...), "
                f"got {type(comp).__name__}", "pass compensate='service.verb'",
            )
        comp_command = _check_command(saga_type, name, comp.command, "compensate")
        comp_contract = comp.command if isinstance(comp.command, Command) else None
        if comp.payload is not None and not callable(comp.payload):
            raise SagaDefinitionError(
                saga_type, name, "the compensation payload is not callable",
                "pass a function data -> dict for compensation(..., payload=...)",
            )
        comp_own = typed.payload(comp.payload) if typed is not None else comp.payload
        comp_payload = compensation_payload(comp_contract, comp_own, payload)
        comp_policy = _policy(
            saga_type, name,
            comp.timeout if comp.timeout is not None else policy.timeout,
            comp.retries if comp.retries is not None else policy.retries,
            comp.backoff if comp.backoff is not None else policy.backoff,
            what="compensation ",
        )
    return StepSpec(
        name=name,
        element=index,
        command=command,
        payload=payload,
        on_reply=reply_handler(contract, on_reply),
        when=when,
        policy=policy,
        compensation_command=comp_command,
        compensation_payload=comp_payload,
        compensation_policy=comp_policy,
        contract=contract,
        compensation_contract=comp_contract,
    )


def _check_command(saga_type: str, step_name: str, command: Any, what: str) -> str:
    """The command name of `invoke=`/`compensate=`: a contract's, or a valid name."""
    if isinstance(command, Command):
        return command.name
    if not isinstance(command, str) or not COMMAND_PATTERN.match(command):
        raise SagaDefinitionError(
            saga_type, step_name, f"{what}={command!r} is not a command name <service>.<verb>",
            f"write it as {what}='inventory.reserve' (one dot; letters, digits, '-', '_'), "
            "or pass a Command contract",
        )
    return command


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _policy(
    saga_type: str, name: str | None, timeout: Any, retries: Any, backoff: Any, what: str = ""
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
