"""A recorded run of the `place-order` example saga through the pure engine, to prove that a
change to the DSL (the explicit pivot, saga-level defaults) leaves the engine's behaviour and the
meaning of stored saga state untouched.

`record()` drives the saga through scenarios (complete, refusals at each step, timeouts,
late and duplicate replies, an abort) and keeps, for each event, the state the orchestrator
would have stored before it (as JSON), the event and the decision. `place_order_trace.json` was
recorded with the code before the explicit pivot (commit e65f571):
`python -m tests.orchestrator.place_order_trace > tests/orchestrator/place_order_trace.json`.
The test replays every stored state with today's definition and compares the decisions.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from examples.place_order.saga import define_place_order
from orchestrator.dsl import SagaDefinition
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
from orchestrator.engine.state import SagaState, new_saga

ORDER = {
    "customer_id": "c-1",
    "items": [{"sku": "sku-1", "quantity": 2}],
    "total_cents": 1500,
    "country": "FR",
}
EVENTS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Abort, Reply, Resume, RetryStep, SkipStep, Start, TimerFired)
}


def definition() -> SagaDefinition:
    """The example saga with short timeouts and one re-send, so scenarios exhaust retries."""
    return define_place_order(timeout=5.0, retries=1)


def event_to_json(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def event_from_json(obj: dict[str, Any]) -> Event:
    fields = dict(obj)
    cls = EVENTS[fields.pop("type")]
    event: Event = cls(**fields)
    return event


def decision_to_json(decision: Decision) -> dict[str, Any]:
    return {
        "state": decision.state.to_json(),
        "commands": [dataclasses.asdict(c) for c in decision.commands],
        "timers": [dataclasses.asdict(t) for t in decision.timers],
        "step_records": [dataclasses.asdict(r) for r in decision.step_records],
        "final": None if decision.final is None else dataclasses.asdict(decision.final),
        "rejected": decision.rejected,
    }


class Driver:
    """Feeds events to `decide`, remembering (stored state, event, decision) for each."""

    def __init__(self, name: str, saga: SagaDefinition) -> None:
        self.saga = saga
        self.state = new_saga(f"saga-{name}", saga, saga.validate_input(ORDER))
        self.now = 0.0
        self.sent: list[Command] = []
        self.timers: list[Timer] = []
        self.steps: list[dict[str, Any]] = []

    def apply(self, event: Event) -> Decision:
        stored = json.loads(json.dumps(self.state.to_json()))
        decision = decide(self.state, event, self.saga)
        self.steps.append(
            {"state": stored, "event": event_to_json(event), "decision": decision_to_json(decision)}
        )
        self.state = decision.state
        self.sent.extend(decision.commands)
        self.timers.extend(decision.timers)
        return decision

    def command(self, step: str, kind: str = "forward") -> Command:
        return [c for c in self.sent if c.step == step and c.kind == kind][-1]

    def reply(self, command: Command, outcome: str = "success", **payload: Any) -> Decision:
        self.now += 0.5
        return self.apply(Reply(
            command.step, command.message_id, command.attempt, outcome,  # type: ignore[arg-type]
            payload, self.now,
        ))

    def fire(self, kind: str = "timeout") -> Decision:
        timer = [t for t in self.timers if t.kind == kind][-1]
        self.now = max(self.now, timer.due)
        return self.apply(
            TimerFired(timer.kind, timer.step, timer.step_kind, timer.attempt, self.now)
        )


def _complete(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), reservation_id="r-1")
    d.reply(d.command("charge-payment"), payment_id="p-1")
    d.reply(d.command("schedule-shipping"), shipment_id="s-1")


def _reserve_refused(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), "failure", reason="out of stock")


def _charge_refused(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), reservation_id="r-1")
    d.reply(d.command("charge-payment"), "failure", reason="insufficient credit")
    d.reply(d.command("reserve-stock", "compensation"))


def _ship_refused(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), reservation_id="r-1")
    d.reply(d.command("charge-payment"), payment_id="p-1")
    d.reply(d.command("schedule-shipping"), "failure", reason="we do not ship to AQ")
    d.reply(d.command("charge-payment", "compensation"))
    d.reply(d.command("reserve-stock", "compensation"))


def _ship_times_out_then_resumed(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), reservation_id="r-1")
    d.reply(d.command("charge-payment"), payment_id="p-1")
    d.fire()
    d.apply(Abort(d.now))  # refused: the pivot is in flight
    d.fire("backoff")
    d.fire()  # retries exhausted at the pivot: failed
    d.apply(Resume(d.now + 10))
    d.reply(d.command("schedule-shipping"), shipment_id="s-2")


def _late_and_duplicate_replies(d: Driver) -> None:
    first = d.command("reserve-stock")
    d.fire()
    d.fire("backoff")
    d.reply(first, reservation_id="late")  # attempt 1: ignored
    again = d.command("reserve-stock")
    d.reply(again, reservation_id="r-2")
    d.reply(again, reservation_id="r-dup")  # duplicate: ignored
    d.reply(d.command("charge-payment"), payment_id="p-1")
    d.apply(RetryStep("schedule-shipping", d.now + 1))
    d.apply(SkipStep("schedule-shipping", {"shipment_id": "manual"}, d.now + 2))


def _abort_before_pivot(d: Driver) -> None:
    d.reply(d.command("reserve-stock"), reservation_id="r-1")
    d.apply(Abort(d.now + 1))
    d.reply(d.command("charge-payment", "compensation"))
    d.fire()  # the release times out once
    d.fire("backoff")
    d.reply(d.command("reserve-stock", "compensation"))


SCENARIOS: dict[str, Callable[[Driver], None]] = {
    "complete": _complete,
    "reserve-refused": _reserve_refused,
    "charge-refused": _charge_refused,
    "ship-refused": _ship_refused,
    "ship-times-out-then-resumed": _ship_times_out_then_resumed,
    "late-and-duplicate-replies": _late_and_duplicate_replies,
    "abort-before-pivot": _abort_before_pivot,
}


def record() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    saga = definition()
    for name, scenario in SCENARIOS.items():
        driver = Driver(name, saga)
        driver.apply(Start(0.0))
        scenario(driver)
        out[name] = driver.steps
    return out


def replay(stored: dict[str, Any], saga: SagaDefinition) -> dict[str, Any]:
    """The decision today's code takes from a stored state and event."""
    state = SagaState.from_json(stored["state"])
    decision = decide(state, event_from_json(stored["event"]), saga)
    return json.loads(json.dumps(decision_to_json(decision)))


if __name__ == "__main__":
    json.dump(record(), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
