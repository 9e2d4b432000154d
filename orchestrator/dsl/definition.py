"""What `saga()` produces: a validated `SagaDefinition`, its elements and steps as the engine
sees them, and the error raised for a declaration that cannot run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from orchestrator.dsl.contracts import Command
from orchestrator.dsl.declare import (
    Backoff,
    Data,
    PayloadBuilder,
    Predicate,
    ReplyHandler,
    ResultBuilder,
)

# The longest search key value stored (the column's length).
MAX_SEARCH_VALUE = 200


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
    # The contracts the step's commands were declared with (None: a plain command name).
    contract: Command[Any, Any] | None = None
    compensation_contract: Command[Any, Any] | None = None

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
    defaults: RetryPolicy
    # The model of the saga's data (`saga(state=...)`); None: a plain dict.
    state_model: type[BaseModel] | None = None
    # Input fields stored at start so the console finds the saga by them (docs/console.md).
    search_keys: tuple[str, ...] = ()

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(self.steps)

    @property
    def contracts(self) -> dict[str, Command[Any, Any]]:
        """The command contracts the saga's steps and compensations use, by command name
        (for AsyncAPI and diagrams); commands given by name only are not in it."""
        out: dict[str, Command[Any, Any]] = {}
        for spec in self.steps.values():
            for contract in (spec.contract, spec.compensation_contract):
                if contract is not None:
                    out.setdefault(contract.name, contract)
        return out

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

    def search_values(self, data: Data) -> dict[str, str]:
        """The declared search keys' values in a saga's first data, as text: a key whose value
        is missing, not a string or an integer, or longer than `MAX_SEARCH_VALUE` is left out."""
        values: dict[str, str] = {}
        for name in self.search_keys:
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if isinstance(value, str) and value and len(value) <= MAX_SEARCH_VALUE:
                values[name] = value
        return values

    def __repr__(self) -> str:
        return f"SagaDefinition({self.saga_type!r}, version={self.version})"
