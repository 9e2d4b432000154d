"""Command contracts in the DSL (issue 16, item 1): declared once with a name, a payload model and
a reply model; a step invoking one sends a checked payload and reads a typed reply."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator.dsl import (
    Command,
    ContractError,
    ContractViolation,
    SagaDefinition,
    compensation,
    saga,
    step,
)
from orchestrator.testing import refuse, reply, run_saga

ROOT = Path(__file__).resolve().parents[2]


class Line(BaseModel):
    sku: str
    quantity: int


class ReserveItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Line]


class Reserved(BaseModel):
    reservation_id: str


class Release(BaseModel):
    items: list[Line]


class Released(BaseModel):
    pass


class OutOfStock(BaseModel):
    sku: str


RESERVE = Command("inventory.reserve", payload=ReserveItems, reply=Reserved, refusal=OutOfStock)
RELEASE = Command("inventory.release", payload=Release, reply=Released)
ORDER = {"items": [{"sku": "sku-1", "quantity": 2}]}


# ---------------------------------------------------------------- the declaration


def test_a_contract_names_its_service_verb_and_models() -> None:
    assert (RESERVE.service, RESERVE.verb) == ("inventory", "reserve")
    schemas = RESERVE.schemas()
    assert schemas["reply"]["required"] == ["reservation_id"]
    assert set(schemas) == {"payload", "reply", "refusal"}
    assert "refusal" not in RELEASE.schemas()


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"name": "inventory"}, "is not <service>.<verb>"),
        ({"payload": dict}, "payload=<class 'dict'> is not a pydantic model class"),
        ({"reply": None}, "reply=None is not a pydantic model class"),
        ({"refusal": str}, "refusal=<class 'str'> is not a pydantic model class"),
    ],
)
def test_a_bad_contract_is_an_error_naming_the_command_and_fix(
    kwargs: dict[str, Any], text: str
) -> None:
    args: dict[str, Any] = {"name": "inventory.reserve", "payload": ReserveItems,
                            "reply": Reserved, **kwargs}
    with pytest.raises(ContractError) as info:
        Command(**args)
    assert text in info.value.problem and "Fix: " in str(info.value)


def test_both_sides_validate_through_the_contract_naming_the_fields() -> None:
    payload = RESERVE.dump_payload(ReserveItems(items=[Line(sku="a", quantity=1)]))
    assert payload == {"items": [{"sku": "a", "quantity": 1}]}
    assert RESERVE.load_payload(payload).items[0].sku == "a"
    assert RESERVE.load_reply({"reservation_id": "r-1"}) == Reserved(reservation_id="r-1")
    assert RESERVE.dump_reply(Reserved(reservation_id="r-1")) == {"reservation_id": "r-1"}
    assert RESERVE.dump_refusal({"sku": "a"}) == {"sku": "a"}

    with pytest.raises(ContractViolation) as info:
        RESERVE.load_reply({"hold_id": "h-1"})
    assert str(info.value) == (
        "inventory.reserve reply does not match Reserved: reservation_id: Field required"
    )
    assert info.value.fields == ["reservation_id"] and info.value.part == "reply"

    with pytest.raises(ContractViolation) as info:
        RESERVE.dump_payload({"items": [{"sku": "a", "quantity": "many"}], "note": 1})
    assert info.value.fields == ["items.0.quantity", "note"]

    with pytest.raises(ContractViolation, match="got a Reserved, not a ReserveItems"):
        RESERVE.dump_payload(Reserved(reservation_id="x"))  # type: ignore[arg-type]
    with pytest.raises(ContractViolation, match="refusal does not match OutOfStock: sku"):
        RESERVE.dump_refusal({"quantity": 3})


# ---------------------------------------------------------------- steps invoking contracts


def items(data: dict[str, Any]) -> ReserveItems:
    return ReserveItems.model_validate({"items": data["items"]})


def reserve_saga(payload: Any = items) -> SagaDefinition:
    return saga("contracted", version=1, steps=[
        step(
            "reserve",
            RESERVE,
            payload=payload,
            on_reply=lambda d, r: {**d, "reservation_id": r.reservation_id},
            compensate=RELEASE,
        ),
        step("ship", "shipping.schedule", pivot=True),
    ])


def test_a_step_invoking_a_contract_sends_its_name_and_lists_it() -> None:
    d = reserve_saga()
    spec = d.steps["reserve"]
    assert (spec.command, spec.contract, spec.compensation_command) == (
        "inventory.reserve", RESERVE, "inventory.release"
    )
    assert d.contracts == {"inventory.reserve": RESERVE, "inventory.release": RELEASE}
    assert d.steps["ship"].contract is None


def test_the_payload_model_is_sent_as_json_and_the_reply_handler_gets_the_model() -> None:
    seen: list[Any] = []

    def reserved(data: dict[str, Any], r: Reserved) -> dict[str, Any]:
        seen.append(r)
        return {**data, "reservation_id": r.reservation_id}

    d = saga("typed-reply", version=1, steps=[
        step("reserve", RESERVE, on_reply=reserved, compensate="inventory.release"),
    ])
    run = run_saga(d, ORDER, {"inventory.reserve": reply({"reservation_id": "r-1"})})
    assert run.payloads("inventory.reserve") == [ORDER]  # default: the data, checked
    assert seen == [Reserved(reservation_id="r-1")]
    assert run.status == "completed" and run.data["reservation_id"] == "r-1"


def test_a_reply_breaking_the_contract_is_compensated_with_the_field_named() -> None:
    run = run_saga(reserve_saga(), ORDER, {"inventory.reserve": reply({"hold_id": "h-1"})})
    assert run.status == "compensated"
    assert run.compensations == ["inventory.release"]
    assert run.failure == {
        "step": "reserve",
        "reason": "ContractViolation in on_reply: inventory.reserve reply does not match "
                  "Reserved: reservation_id: Field required",
    }


def test_a_reply_is_checked_even_without_a_reply_handler() -> None:
    d = saga("unhandled", version=1, steps=[step("reserve", RESERVE, compensate=RELEASE)])
    run = run_saga(d, ORDER, {"inventory.reserve": reply({})})
    assert run.status == "compensated"


def test_a_payload_breaking_the_contract_fails_the_step_before_it_is_sent() -> None:
    d = reserve_saga(payload=lambda data: {"items": data["items"], "rush": True})
    run = run_saga(d, ORDER)
    assert run.sent == []
    assert run.failure is not None and "rush: Extra inputs are not permitted" in (
        run.failure["reason"]
    )


def test_a_compensation_contract_checks_its_payload_built_from_the_forward_one() -> None:
    run = run_saga(reserve_saga(), ORDER, {
        "inventory.reserve": reply({"reservation_id": "r-1"}),
        "shipping.schedule": refuse("no"),
    })
    assert run.payloads("inventory.release") == [ORDER]

    own = saga("own-undo", version=1, steps=[
        step("reserve", RESERVE, compensate=compensation(
            RELEASE, payload=lambda d: Release(items=[Line(sku="x", quantity=1)]))),
        step("ship", "shipping.schedule", pivot=True),
    ])
    run = run_saga(own, ORDER, {"shipping.schedule": refuse("no"),
                                "inventory.reserve": reply({"reservation_id": "r"})})
    assert run.payloads("inventory.release") == [{"items": [{"sku": "x", "quantity": 1}]}]


def test_mypy_catches_a_misspelt_reply_field(tmp_path: Path) -> None:
    module = tmp_path / "scratch_saga.py"
    module.write_text(textwrap.dedent("""
        from typing import Any
        from pydantic import BaseModel
        from orchestrator.dsl import Command, saga, step

        class Reserve(BaseModel):
            sku: str

        class Reserved(BaseModel):
            reservation_id: str

        RESERVE = Command("inventory.reserve", payload=Reserve, reply=Reserved)

        def build(d: dict[str, Any]) -> Reserve:
            return Reserve(sku=d["sku"])

        good = saga("s", version=1, steps=[
            step("a", RESERVE, payload=build,
                 on_reply=lambda d, r: {**d, "rid": r.reservation_id}, pivot=True),
        ])
        bad = saga("s", version=2, steps=[
            step("a", RESERVE, payload=build,
                 on_reply=lambda d, r: {**d, "rid": r.hold_id}, pivot=True),
        ])
    """))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), str(module)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'scratch_saga.py:23: error: "Reserved" has no attribute "hold_id"  [attr-defined]'
    ]
