"""The saga engine's rules, one behaviour per test (docs/sagas.md)."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from orchestrator.dsl import Backoff, SagaDefinition, compensation, parallel, saga, step
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
from orchestrator.engine.rules import jitter_spread, message_id_for
from orchestrator.engine.state import SagaState, new_saga


class PlaceOrder(BaseModel):
    order_id: str
    sku: str
    quantity: int
    amount_cents: int
    address: str


def place_order_saga(version: int = 1) -> SagaDefinition:
    """The demo saga, as docs/sagas.md shows it."""
    return saga(
        "place-order",
        version=version,
        input=PlaceOrder,
        timeout=5,
        retries=2,
        steps=[
            step(
                "reserve-stock",
                invoke="inventory.reserve",
                payload=lambda d: {"order_id": d["order_id"], "sku": d["sku"],
                                   "quantity": d["quantity"]},
                on_reply=lambda d, r: {**d, "reservation_id": r["reservation_id"]},
                compensate="inventory.release",
                backoff=Backoff(initial=1, multiplier=2, max=10, jitter=0.2),
            ),
            step(
                "charge-payment",
                invoke="payments.charge",
                payload=lambda d: {"order_id": d["order_id"], "amount_cents": d["amount_cents"]},
                on_reply=lambda d, r: {**d, "charge_id": r["charge_id"]},
                compensate=compensation("payments.refund", retries=5),
            ),
            step(
                "schedule-shipping",
                invoke="shipping.schedule",
                payload=lambda d: {"order_id": d["order_id"], "address": d["address"]},
                on_reply=lambda d, r: {**d, "tracking": r["tracking"]},
                retries=1,
                pivot=True,
            ),
        ],
        result=lambda d: {"order_id": d["order_id"], "tracking": d["tracking"]},
    )


ORDER = {"order_id": "o-1", "sku": "sku-1", "quantity": 2, "amount_cents": 1500,
         "address": "1 Main St"}


class Saga:
    """Feeds events to `decide` and keeps the latest state and decision."""

    def __init__(self, definition: SagaDefinition, data: dict[str, Any] | None = None,
                 saga_id: str = "saga-1") -> None:
        self.definition = definition
        self.state = new_saga(saga_id, definition, dict(ORDER if data is None else data))
        self.now = 0.0
        self.sent: list[Command] = []
        self.last: Decision = self.apply(Start(self.now))

    def apply(self, event: Event) -> Decision:
        before = copy.deepcopy(self.state.to_json())
        decision = decide(self.state, event, self.definition)
        assert self.state.to_json() == before, "decide modified the state it was given"
        self.state = decision.state
        self.last = decision
        self.sent.extend(decision.commands)
        return decision

    def command(self, step: str, kind: str = "forward") -> Command:
        """The latest command sent for this step and kind."""
        for command in reversed(self.sent):
            if command.step == step and command.kind == kind:
                return command
        raise AssertionError(f"no {kind} command for {step} in {self.sent}")

    def reply(self, command: Command, outcome: str = "success", **payload: Any) -> Decision:
        self.now += 0.1
        return self.apply(Reply(command.step, command.message_id, command.attempt, outcome,  # type: ignore[arg-type]
                                payload, self.now))

    def fire(self, timer: Timer) -> Decision:
        self.now = max(self.now, timer.due)
        return self.apply(TimerFired(timer.kind, timer.step, timer.step_kind, timer.attempt,
                                     self.now))

    def timer(self, kind: str = "timeout") -> Timer:
        (timer,) = [t for t in self.last.timers if t.kind == kind]
        return timer

    def succeed(self, step: str, **payload: Any) -> Decision:
        return self.reply(self.command(step), "success", **payload)


def run_to_shipping(s: Saga) -> None:
    s.succeed("reserve-stock", reservation_id="r-1")
    s.succeed("charge-payment", charge_id="c-1")


# ---------------------------------------------------------------- going forward


def test_start_sends_first_command_with_payload_from_data_and_a_timeout_timer() -> None:
    s = Saga(place_order_saga())
    assert s.last.commands == [
        Command("reserve-stock", "forward", "inventory.reserve",
                {"order_id": "o-1", "sku": "sku-1", "quantity": 2},
                message_id_for("saga-1", "forward", "reserve-stock"), 1)
    ]
    assert s.last.timers == [Timer("timeout", "reserve-stock", "forward", 1, 5.0)]
    assert [(r.step, r.status, r.attempt) for r in s.last.step_records] == [
        ("reserve-stock", "sent", 1)
    ]
    assert s.state.status == "running"
    assert s.state.current_step(s.definition) == "reserve-stock"


def test_place_order_completes_with_the_result_builder_output() -> None:
    s = Saga(place_order_saga())
    run_to_shipping(s)
    decision = s.succeed("schedule-shipping", tracking="t-9")
    assert decision.final is not None
    assert decision.final.status == "completed"
    assert decision.final.result == {"order_id": "o-1", "tracking": "t-9"}
    assert s.state.status == "completed"
    assert s.state.data["reservation_id"] == "r-1" and s.state.data["charge_id"] == "c-1"
    assert s.state.pivot_passed


def test_reply_handler_updates_data_used_by_later_payloads() -> None:
    d = saga("chain", version=1, steps=[
        step("a", "svc.a", on_reply=lambda d, r: {**d, "token": r["token"]}, compensate="svc.x"),
        step("b", "svc.b", payload=lambda d: {"token": d["token"]}, pivot=True),
    ])
    s = Saga(d, {})
    s.succeed("a", token="tok")
    assert s.command("b").payload == {"token": "tok"}


def test_default_result_is_the_saga_data() -> None:
    d = saga("one", version=1, steps=[step("a", "svc.a", pivot=True)])
    s = Saga(d, {"x": 1})
    assert s.succeed("a").final.result == {"x": 1}  # type: ignore[union-attr]


def test_start_twice_is_rejected() -> None:
    s = Saga(place_order_saga())
    assert s.apply(Start(1.0)).rejected == "the saga has already started"


def test_message_id_is_deterministic_per_saga_kind_and_step() -> None:
    a = message_id_for("saga-1", "forward", "reserve-stock")
    assert a == message_id_for("saga-1", "forward", "reserve-stock")
    assert a != message_id_for("saga-2", "forward", "reserve-stock")
    assert a != message_id_for("saga-1", "compensation", "reserve-stock")
    assert a != message_id_for("saga-1", "forward", "reserve-stock", generation=1)


# ---------------------------------------------------------------- failures and compensation


def test_shipping_rejection_compensates_payment_then_inventory() -> None:
    s = Saga(place_order_saga())
    run_to_shipping(s)
    decision = s.reply(s.command("schedule-shipping"), "failure", reason="address rejected")
    assert [(c.step, c.kind, c.command) for c in decision.commands] == [
        ("charge-payment", "compensation", "payments.refund")
    ]
    assert s.state.status == "compensating"
    assert decision.commands[0].message_id == message_id_for("saga-1", "compensation",
                                                             "charge-payment")
    decision = s.reply(s.command("charge-payment", "compensation"))
    assert [(c.step, c.command) for c in decision.commands] == [
        ("reserve-stock", "inventory.release")
    ]
    assert decision.commands[0].payload == {"order_id": "o-1", "sku": "sku-1", "quantity": 2}
    decision = s.reply(s.command("reserve-stock", "compensation"))
    assert decision.final is not None and decision.final.status == "compensated"
    assert decision.final.failure == {"step": "schedule-shipping", "reason": "address rejected"}


def test_failed_step_itself_is_not_compensated() -> None:
    s = Saga(place_order_saga())
    s.succeed("reserve-stock", reservation_id="r-1")
    decision = s.reply(s.command("charge-payment"), "failure", reason="insufficient credit")
    assert [(c.step, c.kind) for c in decision.commands] == [("reserve-stock", "compensation")]


def test_first_step_failure_ends_compensated_without_commands() -> None:
    s = Saga(place_order_saga())
    decision = s.reply(s.command("reserve-stock"), "failure", reason="out of stock")
    assert decision.commands == []
    assert decision.final is not None and decision.final.status == "compensated"
    assert decision.final.failure == {"step": "reserve-stock", "reason": "out of stock"}


def test_business_failure_is_not_retried() -> None:
    s = Saga(place_order_saga())
    decision = s.reply(s.command("reserve-stock"), "failure", reason="out of stock")
    assert [t for t in decision.timers if t.kind == "backoff"] == []
    assert s.state.steps["reserve-stock"].forward.attempt == 1


def test_failure_after_pivot_leaves_saga_failed_and_nothing_is_compensated() -> None:
    d = saga("after-pivot", version=1, steps=[
        step("a", "svc.a", compensate="svc.undo-a"),
        step("pivot", "svc.p", pivot=True),
        step("c", "svc.c"),
    ])
    s = Saga(d, {})
    s.succeed("a")
    s.succeed("pivot")
    decision = s.reply(s.command("c"), "failure", reason="nope")
    assert decision.commands == []
    assert decision.final is not None and decision.final.status == "failed"
    assert decision.final.failure == {"step": "c", "reason": "nope"}


# ---------------------------------------------------------------- timeouts and retries


def test_timeout_sets_backoff_then_resends_same_message_id_with_next_attempt() -> None:
    s = Saga(place_order_saga())
    first = s.command("reserve-stock")
    decision = s.fire(s.timer())
    assert decision.commands == []
    assert [r.status for r in decision.step_records] == ["timed_out"]
    backoff = s.timer("backoff")
    assert backoff.attempt == 1 and backoff.step_kind == "forward"
    assert 5.0 + 0.8 <= backoff.due <= 5.0 + 1.0  # initial 1s, up to 20% shorter
    decision = s.fire(backoff)
    (resent,) = decision.commands
    assert resent.message_id == first.message_id
    assert resent.attempt == 2 and resent.payload == first.payload
    assert s.timer().attempt == 2


def test_backoff_grows_exponentially_is_capped_and_jitter_is_deterministic() -> None:
    b = Backoff(initial=1, multiplier=3, max=5, jitter=0.5)
    assert [b.delay(n, 0.0) for n in (1, 2, 3, 4)] == [1, 3, 5, 5]
    assert b.delay(2, 0.5) == 2.25
    spread = jitter_spread("saga-1", "forward", "a", 1)
    assert 0 <= spread < 1 and spread == jitter_spread("saga-1", "forward", "a", 1)
    assert spread != jitter_spread("saga-2", "forward", "a", 1)


def test_timeout_exhaustion_of_compensatable_step_compensates_it_too() -> None:
    s = Saga(place_order_saga())
    s.succeed("reserve-stock", reservation_id="r-1")
    for _ in range(2):  # retries=2
        s.fire(s.timer())
        s.fire(s.timer("backoff"))
    decision = s.fire(s.timer())
    assert [(c.step, c.kind) for c in decision.commands] == [("charge-payment", "compensation")]
    assert s.state.steps["charge-payment"].forward.status == "unknown"
    assert s.state.failure == {"step": "charge-payment", "reason": "no reply after 3 attempt(s)"}


def test_timeout_exhaustion_of_pivot_leaves_saga_failed() -> None:
    s = Saga(place_order_saga())
    run_to_shipping(s)
    s.fire(s.timer())
    s.fire(s.timer("backoff"))
    decision = s.fire(s.timer())
    assert decision.commands == []
    assert decision.final is not None and decision.final.status == "failed"
    assert decision.final.failure is not None
    assert decision.final.failure["step"] == "schedule-shipping"


def test_late_reply_to_timed_out_attempt_is_ignored() -> None:
    s = Saga(place_order_saga())
    first = s.command("reserve-stock")
    s.fire(s.timer())
    s.fire(s.timer("backoff"))
    state = s.state
    decision = s.reply(first, reservation_id="late")
    assert decision.state is state
    assert decision.commands == [] and decision.timers == []
    (record,) = decision.step_records
    assert record.status == "ignored" and record.attempt == 1
    assert "late reply to attempt 1; current is 2" in (record.error or "")


def test_reply_during_backoff_is_ignored() -> None:
    s = Saga(place_order_saga())
    first = s.command("reserve-stock")
    s.fire(s.timer())
    decision = s.reply(first, reservation_id="r")
    assert [r.status for r in decision.step_records] == ["ignored"]
    assert s.state.steps["reserve-stock"].forward.status == "backoff"


def test_duplicate_reply_is_ignored() -> None:
    s = Saga(place_order_saga())
    reserve = s.command("reserve-stock")
    s.reply(reserve, reservation_id="r-1")
    state = s.state
    decision = s.reply(reserve, reservation_id="r-2")
    assert decision.state is state and decision.commands == []
    assert [r.status for r in decision.step_records] == ["ignored"]
    assert s.state.data["reservation_id"] == "r-1"


def test_reply_for_step_no_longer_current_is_ignored() -> None:
    s = Saga(place_order_saga())
    reserve = s.command("reserve-stock")
    s.apply(Abort(1.0))
    decision = s.reply(reserve, reservation_id="r-1")
    assert [r.status for r in decision.step_records] == ["ignored"]


def test_reply_for_unknown_step_or_message_is_ignored() -> None:
    s = Saga(place_order_saga())
    for event in (Reply("nope", "x", 1, "success", {}, 1.0),
                  Reply("reserve-stock", "not-our-message", 1, "success", {}, 1.0)):
        decision = s.apply(event)
        assert [r.status for r in decision.step_records] == ["ignored"]
        assert decision.commands == []


def test_stale_timer_is_a_no_op() -> None:
    s = Saga(place_order_saga())
    timeout = s.timer()
    s.succeed("reserve-stock", reservation_id="r-1")
    state = s.state
    decision = s.fire(timeout)
    assert decision.state is state
    assert decision.commands == [] and decision.timers == [] and decision.step_records == []


# ---------------------------------------------------------------- parallel groups


def group_saga() -> SagaDefinition:
    return saga("group", version=1, steps=[
        step("first", "svc.first", compensate="svc.unfirst"),
        parallel(
            "reserve-all",
            step("hotel", "hotels.book", compensate="hotels.cancel",
                 on_reply=lambda d, r: {**d, "hotel": r["id"]}),
            step("car", "cars.book", compensate="cars.cancel",
                 on_reply=lambda d, r: {**d, "car": r["id"]}),
            step("flight", "flights.book", compensate="flights.cancel", retries=0),
        ),
        step("confirm", "svc.confirm", pivot=True),
    ])


def test_parallel_group_sends_all_branches_and_advances_when_all_succeed() -> None:
    s = Saga(group_saga(), {})
    s.succeed("first")
    assert {c.step for c in s.last.commands} == {"hotel", "car", "flight"}
    assert len(s.last.timers) == 3
    commands = {c.step: c for c in s.last.commands}
    assert s.reply(commands["car"], id="c").commands == []
    assert s.reply(commands["hotel"], id="h").commands == []
    decision = s.reply(commands["flight"])
    assert [c.step for c in decision.commands] == ["confirm"]
    assert s.state.data == {"hotel": "h", "car": "c"}


def test_parallel_branch_failure_waits_for_inflight_branches_then_compensates() -> None:
    s = Saga(group_saga(), {})
    s.succeed("first")
    commands = {c.step: c for c in s.last.commands}
    flight_timeout = [t for t in s.last.timers if t.step == "flight"][0]
    s.reply(commands["hotel"], id="h")
    decision = s.reply(commands["car"], "failure", reason="no cars")
    assert decision.commands == [] and s.state.status == "running"
    # The flight never answers: its timeout (no retries) makes its outcome unknown.
    decision = s.fire(flight_timeout)
    assert sorted((c.step, c.kind) for c in decision.commands) == [
        ("flight", "compensation"), ("hotel", "compensation")
    ]
    assert s.state.status == "compensating"
    comps = {c.step: c for c in decision.commands}
    assert s.reply(comps["hotel"]).commands == []
    decision = s.reply(comps["flight"])
    assert [(c.step, c.kind) for c in decision.commands] == [("first", "compensation")]
    decision = s.reply(s.command("first", "compensation"))
    assert decision.final is not None and decision.final.status == "compensated"
    assert decision.final.failure == {"step": "car", "reason": "no cars"}


# ---------------------------------------------------------------- conditional steps


def test_conditional_step_false_is_skipped_and_not_compensated() -> None:
    d = saga("cond", version=1, steps=[
        step("a", "svc.a", compensate="svc.undo-a"),
        step("gift", "gifts.wrap", compensate="gifts.unwrap", when=lambda d: d["gift"]),
        step("c", "svc.c", compensate="svc.undo-c"),
    ])
    s = Saga(d, {"gift": False})
    decision = s.succeed("a")
    assert [(r.step, r.status) for r in decision.step_records] == [
        ("a", "succeeded"), ("gift", "skipped"), ("c", "sent")
    ]
    decision = s.reply(s.command("c"), "failure", reason="no")
    assert [(c.step, c.kind) for c in decision.commands] == [("a", "compensation")]


def test_conditional_step_true_is_sent() -> None:
    d = saga("cond", version=1, steps=[
        step("gift", "gifts.wrap", compensate="gifts.unwrap", when=lambda d: d["gift"]),
    ])
    s = Saga(d, {"gift": True})
    assert [c.step for c in s.last.commands] == ["gift"]


# ---------------------------------------------------------------- compensation failures


def test_compensation_is_retried_on_timeout_then_fails_the_saga_when_exhausted() -> None:
    d = saga("c", version=1, steps=[
        step("a", "svc.a", compensate=compensation("svc.undo", retries=1, timeout=2)),
        step("b", "svc.b", compensate="svc.undo-b"),
    ])
    s = Saga(d, {})
    s.succeed("a")
    s.reply(s.command("b"), "failure", reason="no")
    undo = s.command("a", "compensation")
    assert s.timer().due == s.now + 2
    s.fire(s.timer())
    decision = s.fire(s.timer("backoff"))
    assert decision.commands[0].message_id == undo.message_id
    assert decision.commands[0].attempt == 2
    decision = s.fire(s.timer())
    assert decision.final is not None and decision.final.status == "failed"
    assert decision.final.failure == {
        "step": "a", "reason": "compensation failed: no reply after 2 attempt(s)"
    }


def test_compensation_failure_reply_leaves_saga_failed() -> None:
    s = Saga(place_order_saga())
    s.succeed("reserve-stock", reservation_id="r-1")
    s.reply(s.command("charge-payment"), "failure", reason="declined")
    decision = s.reply(s.command("reserve-stock", "compensation"), "failure", reason="db down")
    assert decision.final is not None and decision.final.status == "failed"
    assert decision.final.failure == {"step": "reserve-stock",
                                      "reason": "compensation failed: db down"}


# ---------------------------------------------------------------- operator actions


def test_resume_resends_failed_compensation_with_new_message_id_after_rejection() -> None:
    s = Saga(place_order_saga())
    s.succeed("reserve-stock", reservation_id="r-1")
    s.reply(s.command("charge-payment"), "failure", reason="declined")
    rejected = s.command("reserve-stock", "compensation")
    s.reply(rejected, "failure", reason="db down")
    decision = s.apply(Resume(10.0))
    (again,) = decision.commands
    assert again.kind == "compensation" and again.step == "reserve-stock"
    assert again.message_id == message_id_for("saga-1", "compensation", "reserve-stock", 1)
    assert again.attempt == 2
    assert s.state.status == "compensating"
    assert s.reply(again).final.status == "compensated"  # type: ignore[union-attr]


def test_resume_after_pivot_timeout_resends_with_same_message_id_and_fresh_budget() -> None:
    s = Saga(place_order_saga())
    run_to_shipping(s)
    ship = s.command("schedule-shipping")
    s.fire(s.timer())
    s.fire(s.timer("backoff"))
    s.fire(s.timer())
    assert s.state.status == "failed"
    decision = s.apply(Resume(100.0))
    (again,) = decision.commands
    assert again.message_id == ship.message_id and again.attempt == 3
    assert s.state.status == "running"
    assert s.state.steps["schedule-shipping"].forward.retries_used == 0
    assert s.reply(again, tracking="t").final.status == "completed"  # type: ignore[union-attr]


def test_resume_rejected_unless_failed() -> None:
    s = Saga(place_order_saga())
    assert s.apply(Resume(1.0)).rejected == "only a failed saga can be resumed; it is running"


def test_retry_step_resends_awaiting_step_now_with_same_message_id() -> None:
    s = Saga(place_order_saga())
    first = s.command("reserve-stock")
    decision = s.apply(RetryStep("reserve-stock", 1.0))
    (again,) = decision.commands
    assert again.message_id == first.message_id and again.attempt == 2
    assert decision.timers == [Timer("timeout", "reserve-stock", "forward", 2, 6.0)]
    assert [r.status for r in s.reply(first, reservation_id="x").step_records] == ["ignored"]


def test_retry_step_of_a_step_not_awaiting_is_rejected() -> None:
    s = Saga(place_order_saga())
    decision = s.apply(RetryStep("charge-payment", 1.0))
    assert decision.rejected is not None and "charge-payment" in decision.rejected
    assert decision.state is s.state and decision.commands == []


def test_skip_step_treats_awaiting_step_as_succeeded_with_result() -> None:
    s = Saga(place_order_saga())
    decision = s.apply(SkipStep("reserve-stock", {"reservation_id": "manual"}, 1.0))
    assert [(r.step, r.status) for r in decision.step_records][0] == ("reserve-stock", "skipped")
    assert s.state.data["reservation_id"] == "manual"
    assert [c.step for c in decision.commands] == ["charge-payment"]


def test_skip_of_failed_step_after_pivot_continues_the_saga() -> None:
    d = saga("p", version=1, steps=[step("pivot", "svc.p", pivot=True),
                                           step("notify", "svc.n")])
    s = Saga(d, {})
    s.succeed("pivot")
    s.reply(s.command("notify"), "failure", reason="smtp down")
    assert s.state.status == "failed"
    decision = s.apply(SkipStep("notify", {}, 5.0))
    assert decision.final is not None and decision.final.status == "completed"


def test_abort_compensates_now_including_the_step_in_flight() -> None:
    s = Saga(place_order_saga())
    s.succeed("reserve-stock", reservation_id="r-1")
    decision = s.apply(Abort(2.0))
    assert [(c.step, c.kind) for c in decision.commands] == [("charge-payment", "compensation")]
    assert s.state.failure == {"step": "charge-payment", "reason": "aborted by an operator"}
    s.reply(s.command("charge-payment", "compensation"))
    decision = s.reply(s.command("reserve-stock", "compensation"))
    assert decision.final is not None and decision.final.status == "compensated"


def test_abort_refused_after_pivot_succeeded() -> None:
    d = saga("p", version=1, steps=[step("pivot", "svc.p", pivot=True),
                                           step("notify", "svc.n")])
    s = Saga(d, {})
    s.succeed("pivot")
    decision = s.apply(Abort(1.0))
    assert decision.rejected == "the pivot 'pivot' has succeeded; the saga can only go forward"
    assert decision.state is s.state


def test_abort_refused_while_pivot_in_flight_and_on_terminal_saga() -> None:
    s = Saga(place_order_saga())
    run_to_shipping(s)
    assert "in flight" in (s.apply(Abort(1.0)).rejected or "")
    s.succeed("schedule-shipping", tracking="t")
    assert s.apply(Abort(2.0)).rejected == "the saga is completed"


# ---------------------------------------------------------------- the saga's own code


def test_reply_handler_exception_compensates_the_step_as_unknown() -> None:
    d = saga("bug", version=1, steps=[
        step("a", "svc.a", compensate="svc.undo-a"),
        step("b", "svc.b", compensate="svc.undo-b", on_reply=lambda d, r: {**d, "x": r["missing"]}),
    ])
    s = Saga(d, {})
    s.succeed("a")
    decision = s.succeed("b")
    assert [(c.step, c.kind) for c in decision.commands] == [("b", "compensation")]
    assert "KeyError in on_reply" in (s.state.failure or {})["reason"]


def test_payload_builder_exception_fails_the_step_without_sending() -> None:
    d = saga("bug", version=1, steps=[
        step("a", "svc.a", compensate="svc.undo-a"),
        step("b", "svc.b", payload=lambda d: {"x": d["missing"]}, pivot=True),
    ])
    s = Saga(d, {})
    decision = s.succeed("a")
    assert [(c.step, c.kind) for c in decision.commands] == [("a", "compensation")]
    assert "KeyError" in (s.state.failure or {})["reason"]


def test_result_builder_exception_fails_the_saga_and_resume_retries_it() -> None:
    calls: list[int] = []

    def result(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return {"ok": True}

    d = saga("r", version=1, steps=[step("a", "svc.a", pivot=True)], result=result)
    s = Saga(d, {})
    assert s.succeed("a").final.status == "failed"  # type: ignore[union-attr]
    assert s.apply(Resume(1.0)).final.result == {"ok": True}  # type: ignore[union-attr]


# ---------------------------------------------------------------- state


def test_state_roundtrips_through_json() -> None:
    s = Saga(group_saga(), {"k": [1, 2]})
    s.succeed("first")
    s.reply(s.command("car"), "failure", reason="x")
    text = json.dumps(s.state.to_json())
    assert SagaState.from_json(json.loads(text)) == s.state
    without = s.state.to_json(include_data=False)
    assert "data" not in without
    assert SagaState.from_json(without, data={"k": [1, 2]}) == s.state
    # What the orchestrator stores (orjson writing the tracks' dataclasses) is the same JSON.
    for include_data in (True, False):
        stored = orjson.dumps(s.state.to_stored(include_data))
        assert orjson.loads(stored) == s.state.to_json(include_data)


def test_decide_on_state_of_another_definition_version_raises() -> None:
    s = Saga(place_order_saga(1))
    with pytest.raises(ValueError, match="place-order v1"):
        decide(s.state, Abort(1.0), place_order_saga(2))
