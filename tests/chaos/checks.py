"""The chaos suite's verdicts, read from what the clients saw and from every service's database.

- every accepted request is terminal at its status URL, with the outcome its order calls for;
- `sagaway audit` is clean and its order counts are the clients' counts;
- no participant handled a command twice: one inbox row per (saga, command), and the ids in the
  stored replies are the ids of the business rows (a second run would have made new ones); every
  reply a participant sent reached the orchestrator's inbox; the orchestrator recorded each
  step's success (and each compensation) once, compensations newest first;
- no outbox row written before the drain ended is unpublished, and every replication slot has
  confirmed the WAL written up to then.

The database reads go through `Query` (PostgreSQL through psycopg2, or the `sagaway dev` SQLite
files through sqlite3), in SQL both understand.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.reply_inbox import INBOX_CONSUMER, INBOX_NAMESPACE
from tests.chaos.clients import OrderRecord
from tests.harness.waiting import eventually_sync

Query = Callable[[str, str], list[tuple[Any, ...]]]  # (database, sql) → rows

# command → (business table, its id column, the reply field holding that id)
SIDE_EFFECTS = {
    "inventory.reserve": ("inventory", "inventory_reservations", "reservation_id"),
    "payments.charge": ("payments", "payments_charges", "payment_id"),
    "shipping.schedule": ("shipping", "shipping_shipments", "shipment_id"),
}
FORWARD_STEPS = ("reserve-stock", "charge-payment", "schedule-shipping")
COMPENSATABLE = ("reserve-stock", "charge-payment")


def sqlite_query(data_dir: Path) -> Query:
    def query(database: str, sql: str) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(data_dir / f"{database}.db", timeout=30)
        try:
            return list(connection.execute(sql).fetchall())
        finally:
            connection.close()

    return query


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def check_terminal(records: list[OrderRecord]) -> Counter[str]:
    """Every request was accepted and ended as planned; the final statuses counted."""
    refused = [(r.order.key, dict(r.errors)) for r in records if not r.accepted]
    assert not refused, f"{len(refused)} request(s) never accepted: {refused[:10]}"
    wrong = [
        (r.order.key, r.order.kind, r.final_status, (r.final or {}).get("failure"))
        for r in records
        if r.final_status != r.order.expected
    ]
    assert not wrong, f"{len(wrong)} request(s) ended otherwise than planned: {wrong[:10]}"
    ids = [r.request_id for r in records]
    assert len(set(ids)) == len(ids), "two idempotency keys answered with the same request"
    return Counter(str(r.final_status) for r in records)


def check_audit(report: dict[str, Any], statuses: Counter[str]) -> None:
    assert report["clean"], f"audit violations: {report['violations'][:10]}"
    assert report["orders_in_flight"] == 0, report
    assert report["orders_failed"] == 0, report
    assert report["orders_completed"] == statuses["completed"], (report, statuses)
    assert report["orders_compensated"] == statuses["compensated"], (report, statuses)


def check_once_only(query: Query, records: list[OrderRecord]) -> dict[str, int]:
    """No participant ran a handler twice; the orchestrator took each step's outcome once.
    Returns figures: inbox rows per participant, replies the orchestrator ignored."""
    figures: dict[str, int] = {}
    sagas = {
        row[0]: (row[1], _json(row[2]))
        for row in query("orchestrator", "SELECT id, status, data FROM saga_instances")
    }
    request_ids = {r.request_id for r in records}
    assert set(sagas) == request_ids, (
        f"sagas without a request: {list(set(sagas) - request_ids)[:5]}, "
        f"requests without a saga: {list(request_ids - set(sagas))[:5]}"
    )
    sent_ids = {
        row[0]
        for row in query(
            "orchestrator",
            "SELECT DISTINCT command_message_id FROM saga_steps "
            "WHERE command_message_id IS NOT NULL",
        )
    }
    received = {
        row[0]
        for row in query(
            "orchestrator", f"SELECT message_id FROM inbox WHERE consumer = '{INBOX_CONSUMER}'"
        )
    }
    for service in ("inventory", "payments", "shipping"):
        rows = query(service, f"SELECT message_id, reply FROM inbox WHERE consumer = '{service}'")
        figures[f"inbox_{service}"] = len(rows)
        handled: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for message_id, reply in rows:
            assert message_id in sent_ids, f"{service} handled {message_id}, never sent"
            stored = _json(reply)
            assert stored is not None, f"{service} inbox row {message_id} has no stored reply"
            headers = stored["headers"]
            reply_key = uuid.uuid5(
                INBOX_NAMESPACE, f"{headers['message-id']}/{headers.get('attempt') or 0}"
            )
            assert str(reply_key) in received, (
                f"the orchestrator never took {service}'s reply to {message_id}: {headers}"
            )
            handled[(headers["saga-id"], headers["command"])].append(
                {"outcome": headers.get("outcome"), **(stored.get("payload") or {})}
            )
        twice = {key: replies for key, replies in handled.items() if len(replies) > 1}
        assert not twice, f"{service} handled a command twice: {list(twice.items())[:5]}"
        for command, (database, table, id_column) in SIDE_EFFECTS.items():
            if database != service:
                continue
            business = {
                row[0]: row[1]
                for row in query(
                    service,
                    f"SELECT order_id, {id_column} FROM {table} WHERE {id_column} IS NOT NULL",
                )
            }
            for (saga_id, name), (reply,) in handled.items():
                if name != command or reply["outcome"] != "success":
                    continue
                assert business.get(saga_id) == reply[id_column], (
                    f"{command} of {saga_id} answered {id_column}={reply[id_column]}, "
                    f"but the row holds {business.get(saga_id)}: the handler ran again"
                )
            for saga_id, value in business.items():
                replies = handled.get((saga_id, command), [])
                assert [r["outcome"] for r in replies] == ["success"], (
                    f"{table} row of {saga_id} without the successful {command} behind it: "
                    f"{replies}"
                )
                status, data = sagas.get(saga_id, (None, {}))
                if status == "completed":
                    assert data.get(id_column) == value, (saga_id, id_column, data, value)

    steps: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    ignored = 0
    for step_id, saga_id, step, kind, status in query(
        "orchestrator", "SELECT id, saga_id, step_name, kind, status FROM saga_steps"
    ):
        if status == "ignored":
            ignored += 1
        steps[saga_id].append((int(step_id), step, kind, status))
    figures["replies_ignored"] = ignored
    for saga_id, (status, _data) in sagas.items():
        rows = sorted(steps[saga_id])
        succeeded = Counter((step, kind) for _, step, kind, s in rows if s == "succeeded")
        assert all(n == 1 for n in succeeded.values()), (saga_id, succeeded)
        forward = [step for _, step, kind, s in rows if kind == "forward" and s == "succeeded"]
        undone = [step for _, step, kind, s in rows if kind == "compensation" and s == "succeeded"]
        if status == "completed":
            assert forward == list(FORWARD_STEPS) and not undone, (saga_id, rows)
        else:
            assert status == "compensated", (saga_id, status)
            due = [step for step in forward if step in COMPENSATABLE]
            assert undone == list(reversed(due)), (saga_id, "compensations", undone, due, rows)
    return figures


def wait_outboxes_published(
    query: Query, databases: tuple[str, ...], *, timeout_s: float, slots: bool
) -> dict[str, int]:
    """Every outbox row written up to now gets published, and (PostgreSQL) every slot confirms
    the WAL written up to now, within `timeout_s`. Returns the rows each outbox held at the start
    (heartbeats keep adding new ones; those are not waited for)."""
    marks = {
        database: int(query(database, "SELECT coalesce(max(id), 0) FROM outbox")[0][0])
        for database in databases
    }
    wal = query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0] if slots else None
    left: dict[str, int] = {}
    lagging: list[tuple[Any, ...]] = []

    def published() -> bool:
        nonlocal lagging
        left.update(
            {
                database: int(
                    query(
                        database,
                        f"SELECT count(*) FROM outbox WHERE published_at IS NULL AND id <= {mark}",
                    )[0][0]
                )
                for database, mark in marks.items()
            }
        )
        lagging = (
            query(
                "postgres",
                "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                f"FROM pg_replication_slots WHERE confirmed_flush_lsn < '{wal}'::pg_lsn",
            )
            if slots
            else []
        )
        return not any(left.values()) and not lagging

    eventually_sync(
        published,
        timeout_s=timeout_s,
        what=lambda: (
            f"every outbox row published (unpublished: {left}; slots behind {wal}: {lagging})"
        ),
        interval_s=0.5,
    )
    return marks
