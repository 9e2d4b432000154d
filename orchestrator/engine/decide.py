"""`decide`: given where a saga stands and what just happened, say what happens next. Each kind
of event has its handler here; the rules they apply are in `rules`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.dsl import SagaDefinition
from orchestrator.engine.effects import Decision, StepRecord
from orchestrator.engine.events import (
    Abort,
    Event,
    Reply,
    Resume,
    RetryStep,
    SkipStep,
    Start,
    TimerFired,
)
from orchestrator.engine.rules import DecisionInProgress
from orchestrator.engine.state import (
    AWAITING,
    BACKOFF,
    COMPENSATION,
    FAILED,
    FORWARD,
    IN_FLIGHT,
    UNKNOWN,
    Kind,
    SagaState,
)


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
        run = DecisionInProgress(state, definition, event.now)
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
    run = DecisionInProgress(state, definition, event.now)
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
    run = DecisionInProgress(state, definition, event.now)
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
                run = DecisionInProgress(state, definition, event.now)
                run.send(spec, kind, resend=True)
                return run.decision()
    elif state.status == "failed":
        failed = _failed_commands(state, definition)
        if any(name == event.step for name, _ in failed):
            run = DecisionInProgress(state, definition, event.now)
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
    run = DecisionInProgress(state, definition, event.now)
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
    run = DecisionInProgress(state, definition, event.now)
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
    run = DecisionInProgress(state, definition, event.now)
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
