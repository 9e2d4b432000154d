"""`saga(search_keys=...)`: the input fields stored when a saga starts so that the console finds it
by them — checked at import, read from the validated input, and declared by place-order."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from examples.place_order.saga import place_order
from orchestrator.dsl import SagaDefinitionError, Step, saga, step


class Order(BaseModel):
    customer_id: str
    order_no: int
    note: str | None = None


def _steps() -> list[Step]:
    return [step("charge", "payments.charge", pivot=True)]


def test_search_keys_take_their_values_from_the_input_as_text() -> None:
    definition = saga(
        "keyed", version=1, input=Order, steps=_steps(), search_keys=("customer_id", "order_no")
    )

    assert definition.search_keys == ("customer_id", "order_no")
    data = definition.validate_input({"customer_id": "c-42", "order_no": 7})
    assert definition.search_values(data) == {"customer_id": "c-42", "order_no": "7"}


def test_a_missing_empty_or_overlong_value_is_left_out() -> None:
    definition = saga(
        "keyed", version=1, input=Order, steps=_steps(), search_keys=("customer_id", "note")
    )

    assert definition.search_values({"customer_id": "", "note": None}) == {}
    assert definition.search_values({"customer_id": "x" * 201, "note": "n"}) == {"note": "n"}
    assert definition.search_values({"customer_id": ["a"], "note": True}) == {}


def test_an_untyped_saga_declares_any_field_of_its_input_dict() -> None:
    definition = saga("untyped", version=1, steps=_steps(), search_keys=["account"])

    assert definition.search_values({"account": "acc-1", "other": "x"}) == {"account": "acc-1"}


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (("customer",), "search key 'customer' is not a field of the input Order"),
        ("customer_id", "search_keys must be a sequence of field names"),
        (("customer_id", "customer_id"), "a search key is named twice"),
        (("",), "search key '' is not a valid field name"),
    ],
)
def test_a_bad_search_key_stops_the_import(keys: object, problem: str) -> None:
    with pytest.raises(SagaDefinitionError, match=problem):
        saga("keyed", version=1, input=Order, steps=_steps(), search_keys=keys)  # type: ignore[arg-type]


def test_place_order_declares_the_customer_id() -> None:
    assert place_order.search_keys == ("customer_id",)
