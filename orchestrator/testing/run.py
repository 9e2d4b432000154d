"""`run_saga`: run a definition on the pure engine against scripted participants, in virtual
time, and keep what happened for a test to assert on.

It does what the orchestrator does around `decide` (docs/sagas.md §7) without a broker, a
database or a clock: each command is answered as its participant's script says, timers fire in
due order, and the saga's state goes through JSON between events, as it does when the
orchestrator stores it, so data that would not survive storage fails the test at once.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from orchestrator.dsl import SagaDefinition
from orchestrator.engine.decide import decide
from orchestrator.engine.effects import Command, Decision, Final, StepRecord, Timer
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
from orchestrator.engine.state import COMPENSATION, SagaState, new_saga
from orchestrator.testing.script import LATE_BY_S, Outcome, Payload, Script, for_attempt, reply

MAX_EVENTS = 100_000

_Delivery = tuple[Command, Outcome, Payload]
_Due = tuple[float, int, "_Delivery | Timer"]


class SagaRun:
    """One saga played against scripted participants. Build it with `run_saga(...)`.

    After `run_saga` returns, the saga has settled (nothing left to deliver or fire), unless
    `until` paused it. Operator actions (`resume`, `retry`, `skip`, `abort`) act on the saga
    and play on until it settles again."""

    def __init__(
        self,
        definition: SagaDefinition,
        data: dict[str, Any],
        participants: Mapping[str, Script],
        default: Script,
        saga_id: str,
    ) -> None:
        self.definition = definition
        self.state: SagaState = new_saga(saga_id, definition, data)
        self.now = 0.0
        self.commands: list[Command] = []
        self.records: list[StepRecord] = []
        self.decisions: list[Decision] = []
        self.final: Final | None = None
        self._scripts: dict[str, Script] = dict(participants)
        self._default = default
        self._queue: list[_Due] = []
        self._order = itertools.count()

    # -- what happened

    @property
    def status(self) -> str:
        """`running`, `compensating`, `completed`, `compensated` or `failed`."""
        return self.state.status

    @property
    def result(self) -> dict[str, Any] | None:
        """What the client is answered on completion (the definition's `result`)."""
        return self.state.result

    @property
    def failure(self) -> dict[str, Any] | None:
        """`{"step", "reason"}` of what made the saga compensate or fail, as stored with it
        (the client's answer is `final.failure`, which names a failed compensation)."""
        return self.state.failure

    @property
    def data(self) -> dict[str, Any]:
        return self.state.data

    @property
    def sent(self) -> list[str]:
        """The command names sent, in order; a re-send appears again."""
        return [c.command for c in self.commands]

    @property
    def compensations(self) -> list[str]:
        """The compensation commands sent, in order, each once (re-sends left out)."""
        seen: set[tuple[str, str]] = set()
        out: list[str] = []
        for c in self.commands:
            if c.kind == COMPENSATION and (c.step, c.message_id) not in seen:
                seen.add((c.step, c.message_id))
                out.append(c.command)
        return out

    @property
    def ignored(self) -> list[StepRecord]:
        """Replies the engine did not count (late, duplicate, for a step no longer awaited)."""
        return [r for r in self.records if r.status == "ignored"]

    def payloads(self, command: str) -> list[Payload]:
        """The payload of every command named `command` that was sent, in order."""
        return [c.payload for c in self.commands if c.command == command]

    # -- acting

    def script(self, command: str, script: Script) -> None:
        """Change how `command`'s participant answers from now on (e.g. before `resume()`)."""
        self._check_commands([command])
        self._scripts[command] = script

    def proceed(self, until: Callable[[SagaRun], bool] | None = None) -> SagaRun:
        """Deliver replies and fire timers in due order until nothing is left (or `until`)."""
        for _ in range(MAX_EVENTS):
            if until is not None and until(self):
                return self
            if not self._queue:
                return self
            at, _, item = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            if isinstance(item, Timer):
                self._apply(
                    TimerFired(item.kind, item.step, item.step_kind, item.attempt, self.now)
                )
            else:
                command, outcome, payload = item
                self._apply(Reply(
                    command.step, command.message_id, command.attempt, outcome, payload, self.now
                ))
        raise RuntimeError(f"the saga did not settle after {MAX_EVENTS} events")

    def resume(self) -> str | None:
        """Operator: re-send what failed. Returns why it was refused, or None."""
        return self._operator(Resume(self.now))

    def retry(self, step: str) -> str | None:
        """Operator: re-send `step`'s awaiting (or failed) command now."""
        return self._operator(RetryStep(step, self.now))

    def skip(self, step: str, result: dict[str, Any]) -> str | None:
        """Operator: treat `step`'s awaiting (or failed) command as succeeded with `result`."""
        return self._operator(SkipStep(step, result, self.now))

    def abort(self, reason: str = "aborted by an operator") -> str | None:
        """Operator: compensate now (refused once the pivot succeeded)."""
        return self._operator(Abort(self.now, reason))

    # -- the loop

    def start(self) -> None:
        self._apply(Start(self.now))

    def _operator(self, event: Event) -> str | None:
        decision = self._apply(event)
        if decision.rejected is None:
            self.proceed()
        return decision.rejected

    def _apply(self, event: Event) -> Decision:
        decision = decide(self.state, event, self.definition)
        self.decisions.append(decision)
        self.records.extend(decision.step_records)
        self.state = _through_json(decision.state, event)
        if decision.final is not None:
            self.final = decision.final
        if self.state.terminal:
            # The orchestrator deletes a saga's timers when it ends; replies on their way
            # still arrive (and are ignored).
            self._queue = [due for due in self._queue if not isinstance(due[2], Timer)]
            heapq.heapify(self._queue)
        for timer in decision.timers:
            self._push(timer.due, timer)
        for command in decision.commands:
            _check_json(command.payload, f"the payload of {command.command!r}")
            self.commands.append(command)
            self._answer(command, decision.timers)
        return decision

    def _answer(self, command: Command, timers: list[Timer]) -> None:
        script = self._scripts.get(command.command, self._default)
        behaviour = for_attempt(script, command.attempt)
        if behaviour.outcome is None:
            return
        payload = behaviour.payload(command.payload)
        if behaviour.late:
            due = [t.due for t in timers if t.kind == "timeout" and t.step == command.step
                   and t.step_kind == command.kind and t.attempt == command.attempt]
            at = (due[0] if due else self.now) + LATE_BY_S
        else:
            at = self.now + behaviour.delay
        for _ in range(behaviour.copies):
            self._push(at, (command, behaviour.outcome, payload))

    def _push(self, at: float, item: _Delivery | Timer) -> None:
        heapq.heappush(self._queue, (at, next(self._order), item))

    def _check_commands(self, names: list[str]) -> None:
        known = _commands(self.definition)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"saga {self.definition.saga_type!r} sends no command {unknown[0]!r}; "
                f"it sends {', '.join(sorted(known))}"
            )


def run_saga(
    definition: SagaDefinition,
    input: Mapping[str, Any] | BaseModel,
    participants: Mapping[str, Script] | None = None,
    *,
    default: Script | None = None,
    saga_id: str = "saga-1",
    until: Callable[[SagaRun], bool] | None = None,
) -> SagaRun:
    """Start `definition` with `input` (validated as the gateway does) and play it against
    `participants`: command name -> how its participant answers (`reply`, `refuse`,
    `time_out`, `reply_twice`, `reply_late`, or a list of them, one per attempt). Commands not
    listed are answered with `default` (`reply()`: success, empty payload). Runs until the
    saga settles, or until `until(run)` is true; returns the run to assert on."""
    body = input.model_dump(mode="json") if isinstance(input, BaseModel) else dict(input)
    run = SagaRun(
        definition,
        definition.validate_input(body),
        participants or {},
        default if default is not None else reply(),
        saga_id,
    )
    run._check_commands(list(participants or {}))
    run.start()
    return run.proceed(until)


def _commands(definition: SagaDefinition) -> set[str]:
    names = {s.command for s in definition.steps.values()}
    names.update(
        s.compensation_command for s in definition.steps.values() if s.compensation_command
    )
    return names


def _through_json(state: SagaState, event: Event) -> SagaState:
    """The state as the orchestrator reloads it: stored as JSON and read back."""
    stored = state.to_json()
    try:
        loaded = json.loads(json.dumps(stored))
    except (TypeError, ValueError) as exc:
        raise AssertionError(
            f"after {type(event).__name__} the saga's data is not JSON ({exc}); the orchestrator "
            "stores it as JSON: return only dicts, lists, str, int, float, bool and None"
        ) from exc
    if loaded != stored:
        raise AssertionError(
            f"after {type(event).__name__} the saga's data changes when stored as JSON (a tuple "
            "or a non-str key?): return only dicts, lists, str, int, float, bool and None"
        )
    return SagaState.from_json(loaded)


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON ({exc}): it is sent as a JSON message") from exc
