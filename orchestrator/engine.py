"""The saga engine: a pure function from (saga state, event) to what happens next.

`decide` does no I/O, reads no clock and draws no random numbers: events carry `now`, message ids
are uuid5 of (saga id, kind, step) and jitter is a hash of (saga id, step, attempt). The shell
(the orchestrator service) stores the new state, writes the commands to the outbox, the timers
to the timers table and the step records to `saga_steps`, in one transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.dsl import RetryPolicy, SagaDefinition, StepSpec

Kind = Literal["forward", "compensation"]
TimerKind = Literal["timeout", "backoff"]
Status = Literal["running", "compensating", "completed", "compensated", "failed"]

FORWARD: Kind = "forward"
COMPENSATION: Kind = "compensation"
TERMINAL: frozenset[str] = frozenset({"completed", "compensated", "failed"})
STATUSES: frozenset[str] = frozenset({"running", "compensating"}) | TERMINAL

# Fixed forever: changing it would change every message id of sagas in flight.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f0c3f5e-2b1d-5a7e-9a44-5a6761776179")

# Track statuses. A forward step is `unknown` when its outcome cannot be known (retries
# exhausted, aborted while in flight, reply handler raised): it is compensated like a success.
PENDING, AWAITING, BACKOFF = "pending", "awaiting", "backoff"
SUCCEEDED, FAILED, UNKNOWN, SKIPPED = "succeeded", "failed", "unknown", "skipped"
IN_FLIGHT = frozenset({AWAITING, BACKOFF})
NEEDS_COMPENSATION = frozenset({SUCCEEDED, UNKNOWN})
DONE_FORWARD = frozenset({SUCCEEDED, SKIPPED})


# ---------------------------------------------------------------- events


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


# ---------------------------------------------------------------- outputs


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


# ---------------------------------------------------------------- state


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
        as dataclasses, which orjson writes natively as the same objects (field order = keys).
        Building those dicts in Python was most of the cost of writing a saga step."""
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


@dataclass(slots=True)
class Decision:
    """What `decide` says: the new state and the effects for the shell to carry out."""

    state: SagaState
    commands: list[Command] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    step_records: list[StepRecord] = field(default_factory=list)
    final: Final | None = None
    rejected: str | None = None


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


def message_id_for(saga_id: str, kind: str, step: str, generation: int = 0) -> str:
    """The command message id of a step: the same for every attempt, so participants dedupe."""
    name = f"{saga_id}/{kind}/{step}"
    if generation:
        name = f"{name}/{generation}"
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def jitter_spread(saga_id: str, kind: str, step: str, attempt: int) -> float:
    """A number in [0, 1) fixed by its inputs: the jitter of a backoff, without randomness."""
    digest = hashlib.blake2b(f"{saga_id}/{kind}/{step}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def decide(state: SagaState, event: Event, definition: SagaDefinition) -> Decision:
    """Given where a saga stands and what just happened, say what happens next.

    `state` is not modified. Replies that do not match the awaited attempt, stale timers and
    operator actions that do not apply change nothing (the first are recorded as `ignored`,
    the last come back with `rejected` set).
    """
    if state.saga_type != definition.saga_type or state.version != definition.version:
        raise ValueError(
            f"saga {state.saga_id} is {state.saga_type} v{state.version}, "
            f"not {definition.saga_type} v{definition.version}"
        )
    if isinstance(event, Reply):
        return _on_reply(state, event, definition)
    if isinstance(event, TimerFired):
        return _on_timer(state, event, definition)
    if isinstance(event, Start):
        if state.position != -1:
            return Decision(state, rejected="the saga has already started")
        run = _Run(state, definition, event.now)
        run.enter(0)
        return run.decision()
    if isinstance(event, RetryStep):
        return _on_retry(state, event, definition)
    if isinstance(event, SkipStep):
        return _on_skip(state, event, definition)
    if isinstance(event, Abort):
        return _on_abort(state, event, definition)
    if isinstance(event, Resume):
        return _on_resume(state, event, definition)
    raise TypeError(f"not a saga event: {event!r}")


# ---------------------------------------------------------------- event handlers


def _ignored(state: SagaState, event: Reply, kind: Kind, why: str) -> Decision:
    record = StepRecord(
        event.step, kind, "ignored", event.attempt, event.causation_id, event.payload, why,
        event.now,
    )
    return Decision(state, step_records=[record])


def _on_reply(state: SagaState, event: Reply, definition: SagaDefinition) -> Decision:
    step = state.steps.get(event.step)
    if step is None:
        return _ignored(state, event, FORWARD, f"no step {event.step!r} in this saga")
    if event.causation_id == step.forward.message_id:
        kind: Kind = FORWARD
    elif event.causation_id == step.compensation.message_id:
        kind = COMPENSATION
    else:
        return _ignored(state, event, FORWARD, "answers a message this step no longer awaits")
    track = step.track(kind)
    if state.terminal:
        return _ignored(state, event, kind, f"the saga is {state.status}")
    if track.status != AWAITING:
        return _ignored(state, event, kind, f"the {kind} command is {track.status}, not awaiting")
    if event.attempt != track.attempt:
        return _ignored(
            state, event, kind, f"late reply to attempt {event.attempt}; current is {track.attempt}"
        )
    run = _Run(state, definition, event.now)
    spec = definition.steps[event.step]
    if event.outcome == "success":
        if kind == FORWARD:
            run.forward_succeeded(spec, event.payload, "succeeded")
        else:
            run.compensation_succeeded(spec, event.payload, "succeeded")
    else:
        reason = _reason(event.payload)
        mine = run.state.steps[spec.name].track(kind)
        mine.rejected = True
        run.record(spec.name, kind, "failed", mine, event.payload, reason)
        if kind == FORWARD:
            run.forward_failed(spec, FAILED, reason)
        else:
            run.compensation_failed(spec, reason)
    return run.decision()


def _on_timer(state: SagaState, event: TimerFired, definition: SagaDefinition) -> Decision:
    step = state.steps.get(event.step)
    if step is None or state.terminal:
        return Decision(state)
    track = step.track(event.step_kind)
    wanted = AWAITING if event.kind == "timeout" else BACKOFF
    if track.status != wanted or track.attempt != event.attempt:
        return Decision(state)  # stale: the attempt it was set for is over
    run = _Run(state, definition, event.now)
    spec = definition.steps[event.step]
    if event.kind == "timeout":
        run.timed_out(spec, event.step_kind)
    else:
        run.send(spec, event.step_kind, resend=True)
    return run.decision()


def _on_retry(state: SagaState, event: RetryStep, definition: SagaDefinition) -> Decision:
    if event.step not in state.steps:
        return Decision(state, rejected=f"no step {event.step!r} in this saga")
    step = state.steps[event.step]
    spec = definition.steps[event.step]
    if state.status in ("running", "compensating"):
        for kind in (COMPENSATION, FORWARD):
            if step.track(kind).status in IN_FLIGHT:
                run = _Run(state, definition, event.now)
                run.send(spec, kind, resend=True)
                return run.decision()
    elif state.status == "failed":
        failed = _failed_commands(state, definition)
        if any(name == event.step for name, _ in failed):
            run = _Run(state, definition, event.now)
            run.resume([(name, kind) for name, kind in failed if name == event.step])
            return run.decision()
    return Decision(
        state, rejected=f"step {event.step!r} is not awaiting a reply and did not fail the saga"
    )


def _on_skip(state: SagaState, event: SkipStep, definition: SagaDefinition) -> Decision:
    if event.step not in state.steps:
        return Decision(state, rejected=f"no step {event.step!r} in this saga")
    if not isinstance(event.result, dict):
        return Decision(state, rejected="the result of a skipped step must be a JSON object")
    step = state.steps[event.step]
    spec = definition.steps[event.step]
    kind: Kind | None = None
    if state.status in ("running", "compensating"):
        for candidate in (COMPENSATION, FORWARD):
            if step.track(candidate).status in IN_FLIGHT:
                kind = candidate
                break
    elif state.status == "failed":
        kinds = [k for name, k in _failed_commands(state, definition) if name == event.step]
        kind = kinds[0] if kinds else None
    if kind is None:
        return Decision(
            state, rejected=f"step {event.step!r} is not awaiting a reply and did not fail the saga"
        )
    run = _Run(state, definition, event.now)
    if run.state.status == "failed":
        run.state.status = "compensating" if kind == COMPENSATION else "running"
        if kind == FORWARD:
            run.state.failing = any(
                run.state.steps[s.name].forward.status in (FAILED, UNKNOWN)
                for s in definition.elements[run.state.position].steps
                if s.name != spec.name
            )
            if not run.state.failing:
                run.state.failure = None
    if kind == FORWARD:
        run.forward_succeeded(spec, event.result, "skipped")
    else:
        run.compensation_succeeded(spec, event.result, "skipped")
    return run.decision()


def _on_abort(state: SagaState, event: Abort, definition: SagaDefinition) -> Decision:
    if state.position == -1:
        return Decision(state, rejected="the saga has not started")
    if state.terminal:
        return Decision(state, rejected=f"the saga is {state.status}")
    if state.status == "compensating":
        return Decision(state, rejected="the saga is already compensating")
    pivot = definition.pivot
    if state.pivot_passed:
        name = definition.elements[pivot].name if pivot is not None else "?"
        return Decision(
            state, rejected=f"the pivot {name!r} has succeeded; the saga can only go forward"
        )
    element = definition.elements[state.position]
    if element.index == pivot and state.steps[element.name].forward.status in IN_FLIGHT:
        return Decision(
            state, rejected=f"the pivot {element.name!r} is in flight; wait for its outcome"
        )
    run = _Run(state, definition, event.now)
    for spec in element.steps:
        track = run.state.steps[spec.name].forward
        if track.status in IN_FLIGHT:
            track.status = UNKNOWN
            track.error = event.reason
    if run.state.failure is None:
        run.state.failure = {"step": element.name, "reason": event.reason}
    run.compensate_from(element.index)
    return run.decision()


def _on_resume(state: SagaState, event: Resume, definition: SagaDefinition) -> Decision:
    if state.status != "failed":
        return Decision(state, rejected=f"only a failed saga can be resumed; it is {state.status}")
    run = _Run(state, definition, event.now)
    if state.position >= len(definition.elements):
        run.state.status = "running"
        run.state.failure = None
        run.complete()
        return run.decision()
    run.resume(_failed_commands(state, definition))
    return run.decision()


def _failed_commands(state: SagaState, definition: SagaDefinition) -> list[tuple[str, Kind]]:
    """The commands whose failure left the saga `failed`: what Resume re-sends."""
    if state.compensation is not None:
        _, names = state.compensation[state.compensation_index]
        return [(n, COMPENSATION) for n in names if state.steps[n].compensation.status == FAILED]
    if 0 <= state.position < len(definition.elements):
        return [
            (s.name, FORWARD)
            for s in definition.elements[state.position].steps
            if state.steps[s.name].forward.status in (FAILED, UNKNOWN)
        ]
    return []


def _reason(payload: Mapping[str, Any]) -> str:
    for key in ("reason", "error", "message", "detail"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return "rejected by the participant"


# ---------------------------------------------------------------- the rules


class _Run:
    """One decision in progress: a private copy of the state and the effects collected."""

    __slots__ = ("state", "definition", "now", "commands", "timers", "records", "final")

    def __init__(self, state: SagaState, definition: SagaDefinition, now: float) -> None:
        self.state = state.copy()
        self.definition = definition
        self.now = now
        self.commands: list[Command] = []
        self.timers: list[Timer] = []
        self.records: list[StepRecord] = []
        self.final: Final | None = None

    def decision(self) -> Decision:
        return Decision(self.state, self.commands, self.timers, self.records, self.final)

    def record(
        self, step: str, kind: Kind, status: Any, track: Track,
        payload: dict[str, Any] | None = None, error: str | None = None,
    ) -> None:
        self.records.append(StepRecord(
            step, kind, status, track.attempt, track.message_id, payload, error, self.now
        ))

    # -- going forward

    def enter(self, index: int) -> None:
        """Make element `index` current and send its commands; skip conditional steps."""
        state, elements = self.state, self.definition.elements
        while index < len(elements):
            element = elements[index]
            state.position = index
            state.failing = False
            to_send: list[tuple[StepSpec, dict[str, Any]]] = []
            for spec in element.steps:
                track = state.steps[spec.name].forward
                try:
                    if spec.when is not None and not spec.when(state.data):
                        track.status = SKIPPED
                        self.record(spec.name, FORWARD, "skipped", track)
                        continue
                    payload = spec.payload(state.data) if spec.payload else dict(state.data)
                except Exception as exc:  # a bug in the saga's code fails the step, not the shell
                    self.broken(spec, f"{type(exc).__name__} in when/payload: {exc}")
                    return
                to_send.append((spec, payload))
            if not to_send:
                index += 1
                continue
            for spec, payload in to_send:
                track = state.steps[spec.name].forward
                track.payload = payload
                self.send(spec, FORWARD, resend=False)
            return
        self.complete()

    def broken(self, spec: StepSpec, reason: str) -> None:
        """The saga's own code failed before the command went out: a failure, nothing sent."""
        track = self.state.steps[spec.name].forward
        track.status = FAILED
        track.error = reason
        track.rejected = True
        self.record(spec.name, FORWARD, "failed", track, None, reason)
        self.state.failing = True
        if self.state.failure is None:
            self.state.failure = {"step": spec.name, "reason": reason}
        self.settle()

    def send(self, spec: StepSpec, kind: Kind, resend: bool) -> None:
        """Send (or re-send, same message id, next attempt) a command and set its timeout."""
        state = self.state
        track = state.steps[spec.name].track(kind)
        if track.message_id is None:
            track.message_id = message_id_for(state.saga_id, kind, spec.name, track.generation)
        if kind == FORWARD:
            command, policy = spec.command, spec.policy
        else:
            command = spec.compensation_command or ""
            policy = spec.compensation_policy or spec.policy
        if track.payload is None:  # a fresh compensation, or a new generation
            try:
                track.payload = self._payload(spec, kind)
            except Exception as exc:
                reason = f"{type(exc).__name__} building the {kind} payload: {exc}"
                if kind == FORWARD:
                    self.broken(spec, reason)
                else:
                    track.status = FAILED
                    track.error = reason
                    track.rejected = True
                    self.record(spec.name, kind, "failed", track, None, reason)
                    self.settle_compensation()
                return
        track.attempt += 1
        track.status = AWAITING
        assert track.payload is not None
        self.commands.append(
            Command(spec.name, kind, command, track.payload, track.message_id, track.attempt)
        )
        self.timers.append(
            Timer("timeout", spec.name, kind, track.attempt, self.now + policy.timeout)
        )
        self.record(spec.name, kind, "sent", track, track.payload)

    def _payload(self, spec: StepSpec, kind: Kind) -> dict[str, Any]:
        data = self.state.data
        builder = spec.payload if kind == FORWARD else spec.compensation_payload
        return builder(data) if builder is not None else dict(data)

    def timed_out(self, spec: StepSpec, kind: Kind) -> None:
        track = self.state.steps[spec.name].track(kind)
        policy: RetryPolicy = (
            spec.policy if kind == FORWARD else (spec.compensation_policy or spec.policy)
        )
        self.record(spec.name, kind, "timed_out", track, None, f"no reply in {policy.timeout:g}s")
        if track.retries_used < policy.retries:
            track.retries_used += 1
            track.status = BACKOFF
            spread = jitter_spread(self.state.saga_id, kind, spec.name, track.attempt)
            delay = policy.backoff.delay(track.retries_used, spread)
            self.timers.append(Timer("backoff", spec.name, kind, track.attempt, self.now + delay))
            return
        reason = f"no reply after {track.attempt} attempt(s)"
        if kind == FORWARD:
            track.status = UNKNOWN
            track.error = reason
            self.state.failing = True
            if self.state.failure is None:
                self.state.failure = {"step": spec.name, "reason": reason}
            self.settle()
        else:
            self.compensation_failed(spec, reason)

    def forward_succeeded(self, spec: StepSpec, payload: dict[str, Any], how: str) -> None:
        state = self.state
        track = state.steps[spec.name].forward
        self.record(spec.name, FORWARD, how, track, payload)
        if spec.on_reply is not None:
            try:
                new_data = spec.on_reply(dict(state.data), payload)
                if not isinstance(new_data, dict):
                    raise TypeError(f"on_reply returned {type(new_data).__name__}, not a dict")
            except Exception as exc:
                # The participant did the work, but the saga cannot use the answer: the outcome
                # is as good as unknown, so it is compensated (or left for an operator).
                self.forward_failed(spec, UNKNOWN, f"{type(exc).__name__} in on_reply: {exc}")
                return
            state.data = new_data
        track.status = SUCCEEDED
        track.error = None
        self.settle()

    def forward_failed(self, spec: StepSpec, status: str, reason: str) -> None:
        track = self.state.steps[spec.name].forward
        track.status = status
        track.error = reason
        self.state.failing = True
        if self.state.failure is None:
            self.state.failure = {"step": spec.name, "reason": reason}
        self.settle()

    def settle(self) -> None:
        """After a forward change: advance, wait for branches in flight, or handle the failure."""
        state, definition = self.state, self.definition
        element = definition.elements[state.position]
        statuses = [state.steps[s.name].forward.status for s in element.steps]
        if any(s in IN_FLIGHT for s in statuses):
            return
        if not state.failing:
            if element.index == definition.pivot:
                state.pivot_passed = True
            self.enter(element.index + 1)
            return
        pivot = definition.pivot
        after_pivot = pivot is not None and element.index > pivot
        pivot_unknown = element.index == pivot and statuses[0] == UNKNOWN
        if after_pivot or pivot_unknown:
            self.fail()
        else:
            self.compensate_from(element.index)

    def complete(self) -> None:
        state = self.state
        state.position = len(self.definition.elements)
        builder = self.definition.result
        try:
            result = builder(dict(state.data)) if builder is not None else dict(state.data)
            if not isinstance(result, dict):
                raise TypeError(f"result returned {type(result).__name__}, not a dict")
        except Exception as exc:
            last = self.definition.elements[-1].name
            state.failure = {"step": last, "reason": f"{type(exc).__name__} in result: {exc}"}
            self.fail()
            return
        state.status = "completed"
        state.result = result
        self.final = Final("completed", result, None)

    def fail(self) -> None:
        self.state.status = "failed"
        self.final = Final("failed", None, self.state.failure)

    # -- compensating

    def compensate_from(self, index: int) -> None:
        """Undo, newest first, every compensatable step up to element `index` that succeeded
        or whose outcome is unknown."""
        state = self.state
        plan: list[tuple[int, list[str]]] = []
        for element in reversed(self.definition.elements[: index + 1]):
            names = [
                s.name
                for s in element.steps
                if s.compensatable and state.steps[s.name].forward.status in NEEDS_COMPENSATION
            ]
            if names:
                plan.append((element.index, names))
        state.status = "compensating"
        state.failing = False
        state.compensation = plan
        state.compensation_index = 0
        self.next_batch()

    def next_batch(self) -> None:
        state = self.state
        assert state.compensation is not None
        if state.compensation_index >= len(state.compensation):
            state.status = "compensated"
            self.final = Final("compensated", None, state.failure)
            return
        _, names = state.compensation[state.compensation_index]
        for name in names:
            if self.state.status != "compensating":
                return  # a payload builder failed and the saga is already failed
            self.send(self.definition.steps[name], COMPENSATION, resend=False)

    def compensation_succeeded(self, spec: StepSpec, payload: dict[str, Any], how: str) -> None:
        track = self.state.steps[spec.name].compensation
        self.record(spec.name, COMPENSATION, how, track, payload)
        track.status = SUCCEEDED
        track.error = None
        self.settle_compensation()

    def compensation_failed(self, spec: StepSpec, reason: str) -> None:
        track = self.state.steps[spec.name].compensation
        track.status = FAILED
        track.error = reason
        self.settle_compensation()

    def settle_compensation(self) -> None:
        state = self.state
        assert state.compensation is not None
        _, names = state.compensation[state.compensation_index]
        statuses = [state.steps[n].compensation.status for n in names]
        if any(s in IN_FLIGHT or s == PENDING for s in statuses):
            return
        failed = [n for n in names if state.steps[n].compensation.status == FAILED]
        if failed:
            track = state.steps[failed[0]].compensation
            state.status = "failed"
            self.final = Final(
                "failed", None,
                {"step": failed[0], "reason": f"compensation failed: {track.error}"},
            )
            return
        state.compensation_index += 1
        self.next_batch()

    # -- operator

    def resume(self, failed: list[tuple[str, Kind]]) -> None:
        """Re-send failed commands with a fresh retry budget; a command the participant
        rejected gets a new message id, or its inbox would answer with the same rejection."""
        state = self.state
        if not failed:
            return
        kind = failed[0][1]
        state.status = "compensating" if kind == COMPENSATION else "running"
        if kind == FORWARD:
            state.failure = None
            names = {name for name, _ in failed}
            state.failing = any(
                state.steps[s.name].forward.status in (FAILED, UNKNOWN)
                for s in self.definition.elements[state.position].steps
                if s.name not in names
            )
        for name, k in failed:
            track = state.steps[name].track(k)
            track.retries_used = 0
            track.error = None
            if track.rejected:
                track.generation += 1
                track.message_id = None
                track.payload = None
                track.rejected = False
            self.send(self.definition.steps[name], k, resend=True)
