"""The explicit pivot, saga-level defaults, contracts and typed state change nothing for the
`place-order` sagas in flight: the definition has the same shape and policies, every saga state
stored by the untyped code (place_order_trace.json) is decided exactly as it was then, and sagas
the untyped code left in the orchestrator's database are finished by the running system."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from examples.place_order.audit import audit, load_snapshot
from examples.place_order.models import charges, reservations
from examples.place_order.saga import define_place_order, place_order
from orchestrator.dsl import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, Backoff, RetryPolicy
from orchestrator.models import saga_instances, timers
from orchestrator.registry import SagaRegistry
from tests.harness.stack import Stack
from tests.orchestrator.place_order_trace import definition, replay

TRACE: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).with_name("place_order_trace.json")).read_text()
)


def test_the_example_keeps_its_steps_pivot_and_policies() -> None:
    assert place_order.step_names == ("reserve-stock", "charge-payment", "schedule-shipping")
    assert place_order.pivot == 2
    default = RetryPolicy(DEFAULT_TIMEOUT_S, DEFAULT_RETRIES, Backoff())
    for spec in place_order.steps.values():
        assert spec.policy == default
        assert spec.compensation_policy in (None, default)
    quick = define_place_order(timeout=1.0, retries=0)
    assert {s.policy for s in quick.steps.values()} == {RetryPolicy(1.0, 0, Backoff())}


@pytest.mark.parametrize("scenario", sorted(TRACE))
def test_states_stored_before_the_upgrade_are_decided_as_before(scenario: str) -> None:
    saga = definition()
    for n, stored in enumerate(TRACE[scenario]):
        assert replay(stored, saga) == stored["decision"], f"{scenario}, event {n}"


# -- end to end: sagas the untyped code stored, finished by the running system -----------------


def stored_by_the_old_code(
    scenario: str, event: int, saga_id: str, **data: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (state, data) columns of a saga as the untyped code stored it before `event` of
    `scenario` in place_order_trace.json, re-keyed to `saga_id`, with `data` changed."""
    state = copy.deepcopy(TRACE[scenario][event]["state"])
    stored_data = {**state.pop("data"), **data}
    state["saga_id"] = saga_id
    state["origin"] = {}
    return state, stored_data


async def write_saga(system: Stack, saga_id: str, state: dict[str, Any], data: dict[str, Any],
                     awaiting: str) -> None:
    """Insert the saga row and the reply timeout of its `awaiting` step, due now (as if the
    orchestrator stopped for the upgrade while the step was in flight)."""
    now = datetime.now(UTC)
    async with system.engines["orchestrator"].begin() as conn:
        await conn.execute(saga_instances.insert(), {
            "id": saga_id, "saga_type": "place-order", "definition_version": 1,
            "status": state["status"], "current_step": awaiting, "data": data, "state": state,
            "result": None, "failure": None, "correlation_id": saga_id, "reply_to": None,
            "reply_mode": None, "principal": "tests", "created_at": now, "updated_at": now,
            "version": 1,
        })
        await conn.execute(timers.insert(), {
            "saga_id": saga_id, "kind": "timeout", "step": awaiting, "attempt": 1,
            "due_at": now, "payload": {"step_kind": "forward"}, "created_at": now,
        })


async def test_sagas_stored_by_the_untyped_saga_finish_on_the_typed_one(system: Stack) -> None:
    await system.roles.start_examples()
    client = system.client
    # Saga A was waiting for its charge, saga B for its shipment (to AQ, which is refused):
    # their earlier steps really happened.
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    lines = [{"sku": "sku-1", "quantity": 2}]
    held_a = await client.call(client.command("inventory.reserve", {"items": lines}, a))
    held_b = await client.call(client.command("inventory.reserve", {"items": lines}, b))
    paid_b = await client.call(
        client.command("payments.charge", {"customer_id": "c-1", "amount_cents": 1500}, b)
    )
    state_a, data_a = stored_by_the_old_code(
        "complete", 2, a, reservation_id=held_a.payload["reservation_id"]
    )
    state_b, data_b = stored_by_the_old_code(
        "ship-refused", 3, b, country="AQ",
        reservation_id=held_b.payload["reservation_id"], payment_id=paid_b.payload["payment_id"],
    )
    state_b["steps"]["schedule-shipping"]["forward"]["payload"]["country"] = "AQ"
    await write_saga(system, a, state_a, data_a, "charge-payment")
    await write_saga(system, b, state_b, data_b, "schedule-shipping")

    await system.roles.start_orchestrator(SagaRegistry([place_order]))
    statuses = await system.wait_terminal([a, b], timeout_s=40)

    assert statuses == {a: "completed", b: "compensated"}
    saga_a, saga_b = await system.saga(a), await system.saga(b)
    # The stored data keeps the old shape: the input's keys plus one per reply.
    assert set(saga_a["data"]) == set(data_a) | {"payment_id", "shipment_id"}
    assert saga_a["data"]["reservation_id"] == held_a.payload["reservation_id"]
    charge_a = (await system.rows("payments", sa.select(charges).where(charges.c.order_id == a)))
    assert saga_a["result"] == {
        "reservation_id": held_a.payload["reservation_id"],
        "payment_id": charge_a[0]["payment_id"],
        "shipment_id": saga_a["data"]["shipment_id"],
        "customer_id": "c-1",
        "total_cents": 1500,
    }
    assert saga_b["data"] == data_b
    released = await system.rows(
        "inventory", sa.select(reservations).where(reservations.c.order_id == b)
    )
    refunded = await system.rows("payments", sa.select(charges).where(charges.c.order_id == b))
    assert released[0]["status"] == "released" and refunded[0]["status"] == "refunded"
    e = system.engines
    snapshot = await load_snapshot(e["inventory"], e["payments"], e["shipping"], e["orchestrator"])
    assert audit(snapshot).to_json()["violations"] == []
