"""Saga declarations: what they produce, and the definition errors raised at import time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from orchestrator.dsl import (
    Backoff,
    SagaDefinitionError,
    compensation,
    parallel,
    saga,
    step,
)


class Order(BaseModel):
    order_id: str
    quantity: int


def undoable(name: str, **kwargs: Any) -> Any:
    return step(name, f"svc.{name}", compensate=f"svc.undo-{name}", **kwargs)


def test_declaration_reads_top_to_bottom_and_finds_the_pivot() -> None:
    d = saga(
        "place-order",
        version=3,
        input=Order,
        steps=[
            step("reserve-stock", "inventory.reserve", compensate="inventory.release"),
            step("charge-payment", "payments.charge", compensate="payments.refund"),
            step("schedule-shipping", "shipping.schedule", pivot=True),
            step("notify", "mail.send"),
        ],
    )
    assert d.saga_type == "place-order" and d.version == 3
    assert d.step_names == ("reserve-stock", "charge-payment", "schedule-shipping", "notify")
    assert d.pivot == 2
    assert d.steps["reserve-stock"].compensation_command == "inventory.release"
    assert not d.steps["notify"].compensatable


def test_saga_without_a_step_lacking_compensation_has_no_pivot() -> None:
    d = saga("all-undoable", version=1, steps=[undoable("a"), undoable("b")])
    assert d.pivot is None


def test_compensation_inherits_payload_and_policy_unless_given() -> None:
    payload = lambda d: {"id": d["id"]}  # noqa: E731
    d = saga("s", version=1, steps=[
        step("a", "svc.a", payload=payload, compensate="svc.undo", timeout=7, retries=4),
        step("b", "svc.b", compensate=compensation("svc.undo-b", retries=9, timeout=1.5,
                                                   payload=lambda d: {})),
    ])
    a, b = d.steps["a"], d.steps["b"]
    assert a.compensation_payload is payload
    assert a.compensation_policy == a.policy
    assert a.policy.timeout == 7.0 and a.policy.retries == 4
    assert b.compensation_policy is not None
    assert b.compensation_policy.retries == 9 and b.compensation_policy.timeout == 1.5
    assert b.compensation_policy.backoff == b.policy.backoff


def test_parallel_group_is_one_element_with_its_branches() -> None:
    d = saga("g", version=1, steps=[
        parallel("book", undoable("hotel"), undoable("car")),
        step("pay", "svc.pay", pivot=True),
    ])
    assert [e.name for e in d.elements] == ["book", "pay"]
    assert d.elements[0].is_group and [s.name for s in d.elements[0].steps] == ["hotel", "car"]
    assert d.steps["car"].element == 0 and d.pivot == 1


def test_input_model_validates_bodies_and_publishes_a_schema() -> None:
    d = saga("s", version=1, input=Order, steps=[step("a", "svc.a", pivot=True)])
    assert d.validate_input({"order_id": "o", "quantity": "3"}) == {"order_id": "o", "quantity": 3}
    with pytest.raises(ValidationError):
        d.validate_input({"order_id": "o"})
    assert d.input_schema()["properties"]["quantity"]["type"] == "integer"


def test_without_input_model_any_json_object_is_accepted() -> None:
    d = saga("s", version=1, steps=[step("a", "svc.a", pivot=True)])
    assert d.validate_input({"x": 1}) == {"x": 1}
    assert d.input_schema() == {"type": "object"}
    with pytest.raises(TypeError):
        d.validate_input([1])


def error(**kwargs: Any) -> SagaDefinitionError:
    kwargs.setdefault("version", 1)
    with pytest.raises(SagaDefinitionError) as info:
        saga(kwargs.pop("name", "my-saga"), **kwargs)
    return info.value


def test_error_names_saga_step_and_fix() -> None:
    e = error(steps=[step("a", "svc.a", pivot=True), step("b", "svc.b", compensate="svc.undo")])
    assert e.saga == "my-saga" and e.step == "b"
    assert str(e).startswith("saga 'my-saga', step 'b': ")
    assert "after the pivot 'a'" in str(e) and "Fix: remove its compensation" in str(e)


def test_empty_saga_is_an_error() -> None:
    assert "has no steps" in str(error(steps=[]))


def test_duplicate_step_names_are_an_error() -> None:
    e = error(steps=[undoable("a"), undoable("a")])
    assert e.step == "a" and "used twice" in str(e)


def test_group_and_step_names_share_one_namespace() -> None:
    e = error(steps=[parallel("a", undoable("x")), undoable("a")])
    assert e.step == "a"


@pytest.mark.parametrize("command", ["inventory", "inventory.", ".reserve", "a.b.c", "a b.c", 7])
def test_command_name_must_be_service_dot_verb(command: Any) -> None:
    e = error(steps=[step("a", command)])
    assert e.step == "a" and "<service>.<verb>" in str(e)


def test_compensation_command_name_is_checked_too() -> None:
    e = error(steps=[step("a", "svc.a", compensate="release")])
    assert "compensate='release'" in str(e)


def test_empty_parallel_group_is_an_error() -> None:
    e = error(steps=[parallel("both")])
    assert e.step == "both" and "empty" in str(e)


def test_nested_parallel_group_is_an_error() -> None:
    e = error(steps=[parallel("outer", parallel("inner", undoable("a")))])  # type: ignore[arg-type]
    assert e.step == "outer" and "must be a step" in str(e)


def test_parallel_group_cannot_be_the_pivot() -> None:
    e = error(steps=[parallel("g", undoable("a"), step("b", "svc.b", pivot=True))])
    assert e.step == "b" and "branch of parallel group 'g'" in str(e)
    assert "Fix: make the pivot a single step" in str(e)


def test_retriable_parallel_group_after_pivot_is_allowed() -> None:
    d = saga("s", version=1, steps=[
        step("pivot", "svc.p", pivot=True),
        parallel("notify", step("mail", "mail.send"), step("sms", "sms.send")),
    ])
    assert d.pivot == 0


def test_conditional_pivot_is_an_error() -> None:
    e = error(steps=[step("p", "svc.p", when=lambda d: True, pivot=True)])
    assert e.step == "p" and "conditional" in str(e)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": -1}, "timeout=-1"),
        ({"timeout": float("inf")}, "timeout=inf"),
        ({"retries": -1}, "retries=-1"),
        ({"retries": 1.5}, "retries=1.5"),
        ({"backoff": Backoff(initial=-1)}, "initial=-1"),
        ({"backoff": Backoff(multiplier=0.5)}, "multiplier=0.5"),
        ({"backoff": Backoff(initial=10, max=5)}, "max=5"),
        ({"backoff": Backoff(jitter=2)}, "jitter=2"),
    ],
)
def test_retry_settings_out_of_range_are_errors(kwargs: dict[str, Any], text: str) -> None:
    e = error(steps=[step("a", "svc.a", **kwargs)])
    assert e.step == "a" and text in str(e)


def test_compensation_retry_settings_are_checked() -> None:
    e = error(steps=[step("a", "svc.a", compensate=compensation("svc.u", retries=-2))])
    assert "compensation retries=-2" in str(e)


def test_input_must_be_a_pydantic_model() -> None:
    e = error(steps=[step("a", "svc.a")], input=dict)
    assert e.step is None and "pydantic model" in str(e)


@pytest.mark.parametrize("version", [0, -1, "1", True])
def test_version_must_be_a_positive_integer(version: Any) -> None:
    assert "version" in str(error(steps=[step("a", "svc.a")], version=version))


def test_saga_and_step_names_must_be_url_safe() -> None:
    assert "saga type" in str(error(name="my saga", steps=[step("a", "svc.a")]))
    assert "step name" in str(error(steps=[step("a/b", "svc.a")]))


def test_callables_must_be_callable() -> None:
    e = error(steps=[step("a", "svc.a", payload={"x": 1})])  # type: ignore[arg-type]
    assert "payload is not callable" in str(e)
    e = error(steps=[step("a", "svc.a")], result="data")
    assert "result is not callable" in str(e)
