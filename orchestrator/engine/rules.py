"""How a saga moves: the rules one decision applies to a private copy of the state (send,
time out, succeed, fail, compensate, resume), and the deterministic message ids and jitter."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from orchestrator.dsl import RetryPolicy, SagaDefinition, StepSpec
from orchestrator.engine.effects import Command, Decision, Final, StepRecord, Timer
from orchestrator.engine.state import (
    AWAITING,
    BACKOFF,
    COMPENSATION,
    FAILED,
    FORWARD,
    IN_FLIGHT,
    NEEDS_COMPENSATION,
    PENDING,
    SKIPPED,
    SUCCEEDED,
    UNKNOWN,
    Kind,
    SagaState,
    Track,
)

# Fixed forever: changing it would change every message id of sagas in flight.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f0c3f5e-2b1d-5a7e-9a44-5a6761776179")


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



class DecisionInProgress:
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
