"""How sagas are declared: `saga(...)` with `step(...)`, `parallel(...)` and `compensation(...)`.

A definition is plain data plus the saga's pure functions (payload builders, reply handlers,
predicates). Everything is validated when `saga()` is called, i.e. at import time, so a broken
saga stops the process that loads it with a message naming the saga, the step and the fix.

`declare` holds what an author writes, `contracts` the `Command` contracts shared with
participants, `validate` the checks of `saga()`, `pivot` the pivot rule, `adapt` the wrapping
of contract steps and of a typed state (`saga(state=Model)`), and `definition` what the engine
runs (docs/sagas.md).
"""

from __future__ import annotations

from orchestrator.dsl.contracts import Command, ContractError, ContractViolation
from orchestrator.dsl.declare import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Backoff,
    Compensation,
    Data,
    Parallel,
    PayloadBuilder,
    Predicate,
    ReplyHandler,
    ResultBuilder,
    Step,
    compensation,
    parallel,
    step,
)
from orchestrator.dsl.definition import (
    Element,
    RetryPolicy,
    SagaDefinition,
    SagaDefinitionError,
    StepSpec,
)
from orchestrator.dsl.validate import (
    COMMAND_PATTERN,
    MAX_RETRIES,
    MAX_TIMEOUT_S,
    NAME_PATTERN,
    saga,
)

__all__ = [
    "COMMAND_PATTERN",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "MAX_RETRIES",
    "MAX_TIMEOUT_S",
    "NAME_PATTERN",
    "Backoff",
    "Command",
    "Compensation",
    "ContractError",
    "ContractViolation",
    "Data",
    "Element",
    "Parallel",
    "PayloadBuilder",
    "Predicate",
    "ReplyHandler",
    "ResultBuilder",
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
