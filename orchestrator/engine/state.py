"""Where one saga stands: its status, data and the progress of each step's commands, plus the
conversion to and from the JSON the shell stores it as."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.dsl import SagaDefinition

Kind = Literal["forward", "compensation"]
Status = Literal["running", "compensating", "completed", "compensated", "failed"]

FORWARD: Kind = "forward"
COMPENSATION: Kind = "compensation"
TERMINAL: frozenset[str] = frozenset({"completed", "compensated", "failed"})
STATUSES: frozenset[str] = frozenset({"running", "compensating"}) | TERMINAL

# Track statuses. A forward step is `unknown` when its outcome cannot be known (retries
# exhausted, aborted while in flight, reply handler raised): it is compensated like a success.
PENDING, AWAITING, BACKOFF = "pending", "awaiting", "backoff"
SUCCEEDED, FAILED, UNKNOWN, SKIPPED = "succeeded", "failed", "unknown", "skipped"
IN_FLIGHT = frozenset({AWAITING, BACKOFF})
NEEDS_COMPENSATION = frozenset({SUCCEEDED, UNKNOWN})
DONE_FORWARD = frozenset({SUCCEEDED, SKIPPED})


@dataclass(slots=True)
class Track:
    """Progress of one command of a step: its forward command or its compensation."""

    status: str = PENDING
    attempt: int = 0
    retries_used: int = 0
    message_id: str | None = None
    generation: int = 0
    payload: dict[str, Any] | None = None
    error: str | None = None
    rejected: bool = False  # a failure reply arrived: re-sending the same message id is useless

    def copy(self) -> Track:
        return Track(
            self.status, self.attempt, self.retries_used, self.message_id, self.generation,
            self.payload, self.error, self.rejected,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "attempt": self.attempt, "retries_used": self.retries_used,
            "message_id": self.message_id, "generation": self.generation,
            "payload": self.payload, "error": self.error, "rejected": self.rejected,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Track:
        return cls(
            obj["status"], obj["attempt"], obj["retries_used"], obj["message_id"],
            obj["generation"], obj["payload"], obj["error"], obj["rejected"],
        )


@dataclass(slots=True)
class StepState:
    """The two tracks of one step: its forward command and its compensation."""

    forward: Track = field(default_factory=Track)
    compensation: Track = field(default_factory=Track)

    def copy(self) -> StepState:
        return StepState(self.forward.copy(), self.compensation.copy())

    def track(self, kind: str) -> Track:
        return self.forward if kind == FORWARD else self.compensation


@dataclass(slots=True)
class SagaState:
    """Where one saga stands. JSON-serializable through `to_json`/`from_json`."""

    saga_id: str
    saga_type: str
    version: int
    status: str
    data: dict[str, Any]
    steps: dict[str, StepState]
    position: int = -1  # index of the current element; -1 before Start
    pivot_passed: bool = False
    failing: bool = False  # the current element failed; waiting for its branches to settle
    compensation: list[tuple[int, list[str]]] | None = None  # batches (element, steps)
    compensation_index: int = 0
    failure: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def current_step(self, definition: SagaDefinition) -> str | None:
        """The name for `saga_instances.current_step`: a step or parallel group, or None."""
        if self.compensation is not None and self.compensation_index < len(self.compensation):
            return definition.elements[self.compensation[self.compensation_index][0]].name
        if 0 <= self.position < len(definition.elements):
            return definition.elements[self.position].name
        return None

    def copy(self) -> SagaState:
        return SagaState(
            self.saga_id, self.saga_type, self.version, self.status, self.data,
            {name: s.copy() for name, s in self.steps.items()},
            self.position, self.pivot_passed, self.failing,
            None if self.compensation is None else list(self.compensation),
            self.compensation_index, self.failure, self.result,
        )

    def to_json(self, include_data: bool = True) -> dict[str, Any]:
        """A JSON-compatible dict; without data when the caller stores it in its own column."""
        out = self.to_stored(include_data)
        out["steps"] = {
            name: {"forward": s.forward.to_json(), "compensation": s.compensation.to_json()}
            for name, s in self.steps.items()
        }
        return out

    def to_stored(self, include_data: bool = True) -> dict[str, Any]:
        """`to_json()` for orjson, which the orchestrator stores states with: the tracks are left
        as dataclasses, which orjson writes natively as the same objects (field order = keys),
        because building those dicts in Python is the costly part of writing a saga step."""
        out: dict[str, Any] = {
            "saga_id": self.saga_id,
            "saga_type": self.saga_type,
            "version": self.version,
            "status": self.status,
            "position": self.position,
            "pivot_passed": self.pivot_passed,
            "failing": self.failing,
            "compensation": (
                None if self.compensation is None
                else [[index, list(names)] for index, names in self.compensation]
            ),
            "compensation_index": self.compensation_index,
            "failure": self.failure,
            "result": self.result,
            "steps": {
                name: {"forward": s.forward, "compensation": s.compensation}
                for name, s in self.steps.items()
            },
        }
        if include_data:
            out["data"] = self.data
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], data: dict[str, Any] | None = None) -> SagaState:
        """Rebuild from `to_json()`; pass `data` when it was stored apart."""
        comp = obj["compensation"]
        return cls(
            saga_id=obj["saga_id"],
            saga_type=obj["saga_type"],
            version=obj["version"],
            status=obj["status"],
            data=data if data is not None else obj["data"],
            steps={
                name: StepState(Track.from_json(s["forward"]), Track.from_json(s["compensation"]))
                for name, s in obj["steps"].items()
            },
            position=obj["position"],
            pivot_passed=obj["pivot_passed"],
            failing=obj["failing"],
            compensation=None if comp is None else [(int(i), list(n)) for i, n in comp],
            compensation_index=obj["compensation_index"],
            failure=obj["failure"],
            result=obj["result"],
        )


def new_saga(saga_id: str, definition: SagaDefinition, data: dict[str, Any]) -> SagaState:
    """The state of a saga about to start; feed it `Start(now)` to send the first command."""
    return SagaState(
        saga_id=saga_id,
        saga_type=definition.saga_type,
        version=definition.version,
        status="running",
        data=dict(data),
        steps={name: StepState() for name in definition.steps},
    )
