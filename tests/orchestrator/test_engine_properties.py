"""Stateful property tests of the saga engine: random sagas, random interleavings of replies,
duplicates, reorderings, stale replies, timers and operator actions; the invariants of
docs/sagas.md.

The profile is chosen with HYPOTHESIS_PROFILE (`ci`, the default, stays well under a minute;
`thorough` runs ten times more examples)."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from orchestrator.dsl import Backoff, SagaDefinition, Step, compensation, parallel, saga, step
from orchestrator.engine.decide import decide
from orchestrator.engine.effects import Command, Decision, Timer
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
from orchestrator.engine.state import IN_FLIGHT, STATUSES, TERMINAL, SagaState, new_saga

settings.register_profile(
    "ci",
    max_examples=400,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "thorough",
    max_examples=2500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev",
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


@st.composite
def saga_shapes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random saga: compensatable steps/groups, maybe a pivot, then retriable steps/groups."""
    before = draw(st.integers(0, 3))
    has_pivot = draw(st.booleans())
    after = draw(st.integers(0, 2)) if has_pivot else 0
    if before == 0 and not has_pivot:
        before = 1
    shape: list[dict[str, Any]] = []
    counter = 0

    def new_step(compensatable: bool, may_skip: bool) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        return {
            "name": f"s{counter}",
            "comp": compensatable,
            "conditional": may_skip and draw(st.integers(0, 4)) == 0,
            "retries": draw(st.integers(0, 2)),
            "comp_retries": draw(st.integers(0, 2)),
        }

    def element(compensatable: bool) -> dict[str, Any]:
        if draw(st.integers(0, 3)) == 0:
            counter_branches = draw(st.integers(1, 3))
            return {
                "group": f"g{len(shape)}",
                "branches": [new_step(compensatable, True) for _ in range(counter_branches)],
            }
        return {"group": None, "branches": [new_step(compensatable, True)]}

    for _ in range(before):
        shape.append(element(True))
    if has_pivot:
        shape.append({"group": None, "branches": [{**new_step(False, False), "pivot": True}]})
        for _ in range(after):
            shape.append(element(False))
    return shape


def build(shape: list[dict[str, Any]]) -> SagaDefinition:
    def make(spec: dict[str, Any]) -> Step:
        name = spec["name"]
        return step(
            name,
            f"svc{name}.do",
            payload=lambda data: {"step": name, "order": data["order"]},
            on_reply=lambda data, reply: {**data, name: reply.get("v", 0)},
            compensate=(
                compensation(f"svc{name}.undo", retries=spec["comp_retries"], timeout=3.0)
                if spec["comp"]
                else None
            ),
            when=(lambda data: bool(data["flags"][name])) if spec["conditional"] else None,
            timeout=5.0,
            retries=spec["retries"],
            backoff=Backoff(initial=0.5, multiplier=2.0, max=4.0, jitter=0.5),
            pivot=spec.get("pivot", False),
        )

    elements: list[Any] = []
    for item in shape:
        if item["group"] is None:
            elements.append(make(item["branches"][0]))
        else:
            elements.append(parallel(item["group"], *[make(b) for b in item["branches"]]))
    return saga("random", version=1, steps=elements)


def roundtrip(state: SagaState) -> SagaState:
    return SagaState.from_json(json.loads(json.dumps(state.to_json())))


class SagaMachine(RuleBasedStateMachine):
    """Drives one saga; a twin receives every event too, with each reply delivered twice and
    its state sent through JSON between events: both must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.definition: SagaDefinition | None = None
        self.state: SagaState
        self.twin: SagaState
        self.inflight: list[Command] = []
        self.timers: list[Timer] = []
        self.delivered: list[Reply] = []
        self.sent: list[Command] = []
        self.outcomes: dict[str, str] = {}  # message id -> the participant's sticky outcome
        self.now = 0.0
        self.comp_first_sent: list[str] = []
        self.comp_done: dict[str, int] = {}  # accepted compensation successes per step
        self.forward_done: set[str] = set()  # forward steps with an accepted success
        self.forward_rejected: set[str] = set()
        self.accepted: set[tuple[str, int]] = set()  # (message id, attempt) of accepted replies
        self.backoffs: dict[tuple[str, str], int] = {}  # since the last operator re-send
        self.timed_out: set[tuple[str, int]] = set()  # (message id, attempt) that timed out

    # -- plumbing

    def apply(self, event: Event, *, twin_twice: bool = False) -> Decision:
        assert self.definition is not None
        before = self.state
        decision = decide(self.state, event, self.definition)
        again = decide(self.state, event, self.definition)
        assert again.commands == decision.commands and again.timers == decision.timers
        assert again.step_records == decision.step_records and again.final == decision.final

        twin_decision = decide(roundtrip(self.twin), event, self.definition)
        self.twin = twin_decision.state
        if twin_twice:
            dup = decide(roundtrip(self.twin), event, self.definition)
            assert dup.commands == [] and dup.timers == [] and dup.final is None
            assert all(r.status == "ignored" for r in dup.step_records)
            self.twin = dup.state

        state = decision.state
        assert state.status in STATUSES
        if decision.rejected is not None or (
            decision.step_records and all(r.status == "ignored" for r in decision.step_records)
        ):
            assert state is before, "an ignored or rejected event changed the state"
            assert decision.commands == [] and decision.timers == [] and decision.final is None
        if decision.final is not None:
            assert state.status == decision.final.status and state.status in TERMINAL
        if before.status not in TERMINAL and state.status in TERMINAL:
            assert decision.final is not None, "reached a terminal status without a final"
        self.check_effects(decision)
        self.state = state
        self.inflight.extend(decision.commands)
        self.sent.extend(decision.commands)
        self.timers.extend(decision.timers)
        assert self.twin.to_json() == self.state.to_json(), "duplicates changed the saga"
        return decision

    def check_effects(self, decision: Decision) -> None:
        definition = self.definition
        assert definition is not None
        pivot = definition.pivot
        for record in decision.step_records:
            key = (record.message_id or "", record.attempt)
            if record.status in ("succeeded", "failed") and record.message_id is not None:
                if any(
                    c.message_id == record.message_id and c.attempt == record.attempt
                    for c in self.sent
                ):
                    # A reply is accepted only for the latest attempt, once, and not after its
                    # timeout was accepted.
                    latest = [
                        c for c in self.sent if c.step == record.step and c.kind == record.kind
                    ][-1]
                    assert (latest.message_id, latest.attempt) == key
                    assert key not in self.accepted, "a reply was accepted twice"
                    assert key not in self.timed_out, "accepted a reply after its timeout"
                    self.accepted.add(key)
            if record.status == "timed_out":
                self.timed_out.add(key)
            if record.kind == "compensation" and record.status in ("succeeded", "skipped"):
                self.comp_done[record.step] = self.comp_done.get(record.step, 0) + 1
                assert self.comp_done[record.step] == 1, "compensated twice"
            if record.kind == "forward" and record.status in ("succeeded", "skipped"):
                if record.message_id is not None or record.status == "succeeded":
                    self.forward_done.add(record.step)
            if record.kind == "forward" and record.status == "failed":
                self.forward_rejected.add(record.step)
        for command in decision.commands:
            spec = definition.steps[command.step]
            if command.kind == "compensation":
                assert pivot is None or spec.element < pivot, "compensated at/after the pivot"
                assert command.step not in self.forward_rejected, "compensated a rejected step"
                if command.step not in self.comp_first_sent:
                    # Reverse order: every later element's compensation already succeeded.
                    for other in self.comp_first_sent:
                        other_element = definition.steps[other].element
                        assert other_element >= spec.element, "compensation out of order"
                        if other_element > spec.element:
                            assert self.comp_done.get(other, 0) == 1
                    self.comp_first_sent.append(command.step)

        for timer in decision.timers:
            if timer.kind == "backoff":
                key2 = (timer.step, timer.step_kind)
                self.backoffs[key2] = self.backoffs.get(key2, 0) + 1
                spec = definition.steps[timer.step]
                policy = spec.policy if timer.step_kind == "forward" else spec.compensation_policy
                assert policy is not None
                assert self.backoffs[key2] <= policy.retries, "re-sent more than `retries` times"

    def reply_for(self, command: Command, outcome: str) -> Reply:
        sticky = self.outcomes.setdefault(command.message_id, outcome)
        return Reply(command.step, command.message_id, command.attempt, sticky,  # type: ignore[arg-type]
                     {"v": command.attempt}, self.now)

    def tick(self) -> None:
        self.now += 0.25

    # -- rules

    @initialize(shape=saga_shapes(), flags=st.data())
    def start(self, shape: list[dict[str, Any]], flags: st.DataObject) -> None:
        self.definition = build(shape)
        data = {
            "order": "o-1",
            "flags": {name: flags.draw(st.booleans()) for name in self.definition.steps},
        }
        self.state = new_saga("saga-1", self.definition, data)
        self.twin = self.state
        self.apply(Start(self.now))

    @precondition(lambda self: self.inflight)
    @rule(index=st.integers(0, 1000), outcome=st.sampled_from(["success", "success", "failure"]))
    def reply(self, index: int, outcome: str) -> None:
        command = self.inflight.pop(index % len(self.inflight))
        reply = self.reply_for(command, outcome)
        self.delivered.append(reply)
        self.tick()
        self.apply(reply, twin_twice=True)

    @precondition(lambda self: self.inflight)
    @rule(index=st.integers(0, 1000))
    def lose_command(self, index: int) -> None:
        self.inflight.pop(index % len(self.inflight))

    @precondition(lambda self: self.delivered)
    @rule(index=st.integers(0, 1000))
    def duplicate_reply(self, index: int) -> None:
        reply = self.delivered[index % len(self.delivered)]
        self.tick()
        decision = self.apply(Reply(reply.step, reply.causation_id, reply.attempt, reply.outcome,
                                    reply.payload, self.now))
        assert [r.status for r in decision.step_records] == ["ignored"]

    @precondition(lambda self: self.sent)
    @rule(index=st.integers(0, 1000), outcome=st.sampled_from(["success", "failure"]),
          shift=st.integers(-2, -1))
    def stale_reply(self, index: int, outcome: str, shift: int) -> None:
        command = self.sent[index % len(self.sent)]
        attempt = command.attempt + shift
        if attempt < 1:
            attempt = 10_000  # a future attempt: never sent
        self.tick()
        decision = self.apply(Reply(command.step, command.message_id, attempt, outcome,  # type: ignore[arg-type]
                                    {}, self.now))
        assert [r.status for r in decision.step_records] == ["ignored"]

    @rule(outcome=st.sampled_from(["success", "failure"]))
    def reply_to_unknown_step(self, outcome: str) -> None:
        decision = self.apply(Reply("nope", "0" * 32, 1, outcome, {}, self.now))  # type: ignore[arg-type]
        assert [r.status for r in decision.step_records] == ["ignored"]

    @precondition(lambda self: self.timers)
    @rule(index=st.integers(0, 1000))
    def fire_timer(self, index: int) -> None:
        timer = self.timers.pop(index % len(self.timers))
        self.now = max(self.now, timer.due)
        self.apply(TimerFired(timer.kind, timer.step, timer.step_kind, timer.attempt, self.now))

    @precondition(lambda self: self.definition is not None)
    @rule(data=st.data())
    def operator_retry(self, data: st.DataObject) -> None:
        assert self.definition is not None
        name = data.draw(st.sampled_from(self.definition.step_names))
        if self.apply(RetryStep(name, self.now)).rejected is None:
            self.backoffs.clear()

    @precondition(lambda self: self.definition is not None)
    @rule(data=st.data())
    def operator_skip(self, data: st.DataObject) -> None:
        assert self.definition is not None
        name = data.draw(st.sampled_from(self.definition.step_names))
        self.apply(SkipStep(name, {"v": 99}, self.now))

    @rule()
    def operator_abort(self) -> None:
        decision = self.apply(Abort(self.now))
        if decision.rejected is None:
            assert decision.state.status in ("compensating", "compensated", "failed")

    @rule()
    def operator_resume(self) -> None:
        before = self.state.status
        decision = self.apply(Resume(self.now))
        if decision.rejected is None:
            self.backoffs.clear()
        assert (decision.rejected is None) == (before == "failed")

    # -- invariants

    @invariant()
    def never_stuck(self) -> None:
        """A saga that is not terminal always has a live timer that will move it."""
        if self.definition is None or self.state.status in TERMINAL:
            return
        for name, step_state in self.state.steps.items():
            for kind in ("forward", "compensation"):
                track = step_state.track(kind)
                if track.status not in IN_FLIGHT:
                    continue
                wanted = "timeout" if track.status == "awaiting" else "backoff"
                if any(
                    t.step == name and t.step_kind == kind and t.kind == wanted
                    and t.attempt == track.attempt
                    for t in self.timers
                ):
                    return
        raise AssertionError(f"saga is {self.state.status} with nothing that can move it")

    @invariant()
    def compensated_means_every_completed_step_undone(self) -> None:
        if self.definition is None or self.state.status != "compensated":
            return
        compensatable = {n for n, s in self.definition.steps.items() if s.compensatable}
        undone = {n for n, count in self.comp_done.items() if count}
        assert (self.forward_done & compensatable) <= undone
        # Sent and not rejected means it succeeded or its outcome is unknown: both are undone.
        sent_forward = {c.step for c in self.sent if c.kind == "forward"}
        assert undone == (sent_forward & compensatable) - self.forward_rejected

    def teardown(self) -> None:
        """With no more operator actions or message loss, every saga reaches a terminal status."""
        if self.definition is None:
            return
        for _ in range(2000):
            if self.state.status in TERMINAL:
                break
            if self.inflight:
                command = self.inflight.pop(0)
                self.tick()
                self.apply(self.reply_for(command, "success"))
            elif self.timers:
                self.timers.sort(key=lambda t: t.due)
                timer = self.timers.pop(0)
                self.now = max(self.now, timer.due)
                self.apply(TimerFired(timer.kind, timer.step, timer.step_kind, timer.attempt,
                                      self.now))
            else:
                raise AssertionError("nothing left to deliver and the saga is not terminal")
        assert self.state.status in TERMINAL, f"saga never ended: {self.state.status}"
        event(f"ended {self.state.status}")
        self.compensated_means_every_completed_step_undone()


TestSagaEngineProperties = SagaMachine.TestCase
TestSagaEngineProperties.settings = settings.get_profile(PROFILE)
