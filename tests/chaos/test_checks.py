"""The chaos verdicts can fail: each check is fed the rows of a healthy run, then the same rows
with one defect (a handler that ran twice, a compensation out of order, a lost request, a count
that does not match), and must say so."""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from typing import Any

import pytest

from orchestrator.reply_inbox import INBOX_NAMESPACE
from tests.chaos.checks import check_audit, check_once_only, check_terminal
from tests.chaos.clients import OrderRecord, PlannedOrder

Rows = dict[str, list[tuple[Any, ...]]]


def _reply(saga_id: str, command: str, outcome: str, **payload: Any) -> dict[str, Any]:
    headers = {"message-id": str(uuid.uuid4()), "attempt": "1", "saga-id": saga_id,
               "command": command, "outcome": outcome}  # fmt: skip
    return {"topic": "orchestrator.replies", "headers": headers, "payload": payload}


def _received(rows: Rows) -> list[tuple[Any, ...]]:
    """The orchestrator's inbox rows for every reply the participants stored."""
    return [
        (str(uuid.uuid5(INBOX_NAMESPACE, f"{reply['headers']['message-id']}/1")),)
        for service in ("inventory", "payments", "shipping")
        for _, reply in rows[f"{service}.inbox"]
    ]


def healthy() -> tuple[list[OrderRecord], Rows]:
    """Two orders: one completed, one compensated after shipping refused (AQ)."""
    done, refused = str(uuid.uuid4()), str(uuid.uuid4())
    records = []
    for n, (saga_id, kind, status) in enumerate(
        ((done, "ok", "completed"), (refused, "antarctica", "compensated"))
    ):
        order = PlannedOrder(n, kind, f"k-{n}", {}, sync=False)
        records.append(OrderRecord(order, saga_id, True, 1, Counter(), {"status": status}))
    ids = {s: {"reservation_id": f"r-{s}", "payment_id": f"p-{s}"} for s in (done, refused)}
    rows: Rows = {
        "orchestrator.sagas": [
            (done, "completed", {**ids[done], "shipment_id": "s-1"}),
            (refused, "compensated", ids[refused]),
        ],
        "orchestrator.steps": [
            (1, done, "reserve-stock", "forward", "succeeded"),
            (2, done, "charge-payment", "forward", "succeeded"),
            (3, done, "schedule-shipping", "forward", "succeeded"),
            (4, refused, "reserve-stock", "forward", "succeeded"),
            (5, refused, "charge-payment", "forward", "succeeded"),
            (6, refused, "schedule-shipping", "forward", "failed"),
            (7, refused, "charge-payment", "compensation", "succeeded"),
            (8, refused, "reserve-stock", "compensation", "succeeded"),
        ],
        "inventory.inbox": [
            ("m1", _reply(done, "inventory.reserve", "success", reservation_id=f"r-{done}")),
            ("m4", _reply(refused, "inventory.reserve", "success", reservation_id=f"r-{refused}")),
            ("m8", _reply(refused, "inventory.release", "success")),
        ],
        "payments.inbox": [
            ("m2", _reply(done, "payments.charge", "success", payment_id=f"p-{done}")),
            ("m5", _reply(refused, "payments.charge", "success", payment_id=f"p-{refused}")),
            ("m7", _reply(refused, "payments.refund", "success")),
        ],
        "shipping.inbox": [
            ("m3", _reply(done, "shipping.schedule", "success", shipment_id="s-1")),
            ("m6", _reply(refused, "shipping.schedule", "failure", reason="AQ")),
        ],
        "inventory.business": [(done, f"r-{done}"), (refused, f"r-{refused}")],
        "payments.business": [(done, f"p-{done}"), (refused, f"p-{refused}")],
        "shipping.business": [(done, "s-1")],
    }
    return records, rows


def query_of(rows: Rows) -> Any:
    def query(database: str, sql: str) -> list[tuple[Any, ...]]:
        if "saga_instances" in sql:
            return rows["orchestrator.sagas"]
        if "DISTINCT command_message_id" in sql:
            return [(f"m{n}",) for n in range(1, 20)]
        if "saga_steps" in sql:
            return rows["orchestrator.steps"]
        if "FROM inbox" in sql:
            return _received(rows) if database == "orchestrator" else rows[f"{database}.inbox"]
        return rows[f"{database}.business"]

    return query


def test_a_healthy_run_passes() -> None:
    records, rows = healthy()
    figures = check_once_only(query_of(rows), records)
    assert figures["inbox_payments"] == 3
    assert check_terminal(records) == Counter({"completed": 1, "compensated": 1})


def test_a_charge_handled_twice_is_caught() -> None:
    records, rows = healthy()
    done = records[0].request_id
    rows["payments.inbox"].append(
        ("m9", _reply(str(done), "payments.charge", "success", payment_id=f"p-{done}"))
    )
    with pytest.raises(AssertionError, match="handled a command twice"):
        check_once_only(query_of(rows), records)


def test_a_handler_that_ran_again_under_the_same_message_is_caught() -> None:
    records, rows = healthy()
    rows = copy.deepcopy(rows)
    rows["shipping.business"] = [(records[0].request_id, "s-2")]  # a second run's new shipment
    with pytest.raises(AssertionError, match="the handler ran again"):
        check_once_only(query_of(rows), records)


def test_a_reply_the_orchestrator_never_took_is_caught() -> None:
    records, rows = healthy()
    query = query_of(rows)
    received = _received(rows)[1:]

    def lost_one(database: str, sql: str) -> list[tuple[Any, ...]]:
        if database == "orchestrator" and "FROM inbox" in sql:
            return received
        return query(database, sql)  # type: ignore[no-any-return]

    with pytest.raises(AssertionError, match="never took"):
        check_once_only(lost_one, records)


def test_compensations_out_of_order_are_caught() -> None:
    records, rows = healthy()
    steps = rows["orchestrator.steps"]
    steps[6], steps[7] = (7, *steps[7][1:]), (8, *steps[6][1:])
    with pytest.raises(AssertionError, match="compensations"):
        check_once_only(query_of(rows), records)


def test_a_saga_without_a_request_is_caught() -> None:
    records, rows = healthy()
    with pytest.raises(AssertionError, match="sagas without a request"):
        check_once_only(query_of(rows), records[:1])


def test_a_request_that_ended_otherwise_than_planned_is_caught() -> None:
    records, _ = healthy()
    records[1].final = {"status": "completed"}
    with pytest.raises(AssertionError, match="otherwise than planned"):
        check_terminal(records)


def test_an_audit_whose_counts_differ_from_the_clients_is_caught() -> None:
    report = {"clean": True, "violations": [], "orders_in_flight": 0, "orders_failed": 0,
              "orders_completed": 2, "orders_compensated": 0}  # fmt: skip
    with pytest.raises(AssertionError):
        check_audit(report, Counter({"completed": 1, "compensated": 1}))
    check_audit({**report, "orders_completed": 1, "orders_compensated": 1},
                Counter({"completed": 1, "compensated": 1}))  # fmt: skip
