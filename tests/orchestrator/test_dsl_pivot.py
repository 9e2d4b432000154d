"""The explicit pivot and the saga-level retry defaults (docs/sagas.md, "The pivot" and
"Defaults")."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.dsl import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Backoff,
    RetryPolicy,
    SagaDefinitionError,
    compensation,
    parallel,
    saga,
    step,
)
from orchestrator.engine.decide import decide
from orchestrator.engine.events import Start, TimerFired
from orchestrator.engine.state import new_saga


def undoable(name: str, **kwargs: Any) -> Any:
    return step(name, f"svc.{name}", compensate=f"svc.undo-{name}", **kwargs)


def error(*steps: Any) -> SagaDefinitionError:
    with pytest.raises(SagaDefinitionError) as info:
        saga("order", version=1, steps=list(steps))
    return info.value


# ---------------------------------------------------------------- the pivot


def test_a_last_step_without_compensation_and_no_pivot_mark_names_the_step() -> None:
    e = error(undoable("reserve"), undoable("charge"), step("ship", "shipping.schedule"))
    assert e.saga == "order" and e.step == "ship"
    assert str(e).startswith("saga 'order', step 'ship': it has no compensate= and no step")
    assert "declare it with pivot=True" in e.fix and "give 'ship' a compensate=" in e.fix


def test_marking_the_last_step_makes_it_the_pivot() -> None:
    d = saga("order", version=1, steps=[
        undoable("reserve"), undoable("charge"), step("ship", "shipping.schedule", pivot=True),
    ])
    assert d.pivot == 2


def test_a_saga_that_can_always_be_undone_needs_no_pivot() -> None:
    assert saga("order", version=1, steps=[undoable("a"), undoable("b")]).pivot is None


def test_steps_without_compensation_and_no_mark_name_the_first_and_the_ones_after() -> None:
    e = error(step("reserve", "svc.reserve"), step("ship", "svc.ship"), step("mail", "svc.mail"))
    assert e.step == "reserve"
    assert "then 'ship', 'mail' after it need no compensation" in e.fix


def test_the_pivot_and_retriable_steps_after_it() -> None:
    d = saga("order", version=1, steps=[
        undoable("reserve"),
        step("ship", "svc.ship", pivot=True),
        step("mail", "svc.mail"),
        parallel("tell", step("sms", "svc.sms"), step("push", "svc.push")),
    ])
    assert d.pivot == 1


def test_a_step_before_the_pivot_without_compensation_is_named_with_the_fix() -> None:
    e = error(step("reserve", "svc.reserve"), undoable("charge"),
              step("ship", "svc.ship", pivot=True))
    assert e.step == "reserve"
    assert "comes before the pivot 'ship' and has no compensate=" in e.problem
    assert e.fix == (
        "give 'reserve' a compensate=, or mark 'reserve' as the pivot (pivot=True) instead of "
        "'ship'"
    )


def test_a_branch_before_the_pivot_without_compensation_is_named() -> None:
    e = error(parallel("book", undoable("hotel"), step("car", "svc.car")),
              step("pay", "svc.pay", pivot=True))
    assert e.step == "car" and "before the pivot 'pay'" in e.problem


def test_a_step_after_the_pivot_with_a_compensation_is_named() -> None:
    e = error(step("ship", "svc.ship", pivot=True), undoable("mail"))
    assert e.step == "mail" and "after the pivot 'ship' has a compensation" in e.problem


def test_two_pivots_are_an_error_naming_the_second() -> None:
    e = error(undoable("a"), step("b", "svc.b", pivot=True), step("c", "svc.c", pivot=True))
    assert e.step == "c" and "pivot=True is set on 'b' and on 'c'" in e.problem


def test_a_pivot_with_a_compensation_is_an_error() -> None:
    e = error(undoable("a"), undoable("b", pivot=True))
    assert e.step == "b" and "would never run" in e.problem


def test_pivot_must_be_a_bool() -> None:
    e = error(step("a", "svc.a", pivot="yes"))  # type: ignore[arg-type]
    assert e.step == "a" and "pivot='yes' is not a bool" in e.problem


# ---------------------------------------------------------------- defaults


def test_saga_defaults_apply_to_steps_and_their_compensations() -> None:
    slow = Backoff(initial=2, multiplier=3, max=30, jitter=0)
    d = saga("order", version=1, timeout=4, retries=7, backoff=slow, steps=[
        undoable("a"), step("b", "svc.b", pivot=True),
    ])
    expected = RetryPolicy(timeout=4.0, retries=7, backoff=slow)
    assert d.defaults == expected
    assert d.steps["a"].policy == d.steps["b"].policy == expected
    assert d.steps["a"].compensation_policy == expected


def test_a_step_overrides_each_default_and_its_compensation_inherits_the_step() -> None:
    d = saga("order", version=1, timeout=4, retries=7, steps=[
        undoable("a", timeout=1.5),
        step("b", "svc.b", compensate=compensation("svc.undo-b", retries=20), retries=0,
             backoff=Backoff(initial=0)),
    ])
    a, b = d.steps["a"], d.steps["b"]
    assert (a.policy.timeout, a.policy.retries, a.policy.backoff) == (1.5, 7, Backoff())
    assert a.compensation_policy == a.policy
    assert (b.policy.timeout, b.policy.retries, b.policy.backoff) == (4.0, 0, Backoff(initial=0))
    assert b.compensation_policy == RetryPolicy(4.0, 20, Backoff(initial=0))


def test_without_saga_defaults_the_global_ones_apply() -> None:
    d = saga("order", version=1, steps=[undoable("a")])
    assert d.defaults == RetryPolicy(DEFAULT_TIMEOUT_S, DEFAULT_RETRIES, Backoff())
    assert d.steps["a"].policy == d.defaults


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"timeout": 0}, "timeout=0 is out of range"),
        ({"retries": -1}, "retries=-1 is out of range"),
        ({"backoff": Backoff(jitter=3)}, "jitter=3"),
        ({"backoff": "fast"}, "backoff must be a Backoff"),
    ],
)
def test_saga_defaults_out_of_range_are_errors_of_the_saga(
    kwargs: dict[str, Any], text: str
) -> None:
    with pytest.raises(SagaDefinitionError) as info:
        saga("order", version=1, steps=[undoable("a")], **kwargs)
    assert info.value.step is None and text in str(info.value)


def test_the_engine_times_out_and_resends_with_the_saga_defaults() -> None:
    d = saga("order", version=1, timeout=4, retries=1,
             backoff=Backoff(initial=2, jitter=0), steps=[undoable("a")])
    start = decide(new_saga("s-1", d, {}), Start(10.0), d)
    (timer,) = start.timers
    assert (timer.kind, timer.due) == ("timeout", 14.0)
    timed_out = decide(start.state, TimerFired("timeout", "a", "forward", 1, 14.0), d)
    (backoff,) = timed_out.timers
    assert (backoff.kind, backoff.due) == ("backoff", 16.0)
    resent = decide(timed_out.state, TimerFired("backoff", "a", "forward", 1, 16.0), d)
    assert [c.attempt for c in resent.commands] == [2]
    exhausted = decide(resent.state, TimerFired("timeout", "a", "forward", 2, 20.0), d)
    assert [(c.step, c.kind) for c in exhausted.commands] == [("a", "compensation")]
