"""`sagaway topics grow` with sagas in flight (docs/scaling.md, "Growing a topic"): every saga's
records to a grown topic stay on one partition, so none is consumed out of order; sagas started
after the grow spread over the new partitions; every saga ends and the audit is clean.

Run on the embedded broker: the Kafka-protocol broker installable here (tansu) does not answer
CreatePartitions, and `topics grow` says so there (tests/sagaway/cli/test_topics_grow.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from examples.place_order import example
from examples.place_order.audit import audit, load_snapshot
from examples.place_order.saga import place_order
from orchestrator.registry import SagaRegistry
from sagaway.messaging.embedded.headers import unpack_headers
from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.envelope import PARTITION_COUNT_HEADER
from tests.harness.stack import Servers, Stack, open_stack
from tests.harness.waiting import eventually
from tests.sagaway.cli.test_topics_verbs import invoke

pytestmark = pytest.mark.timeout(120)

BEFORE, AFTER = 2, 6
REFRESH_MS = 200


def order(i: int) -> dict[str, Any]:
    """Every third order asks for more than the customer's credit: payments refuses it and the
    saga sends inventory a second command (release) — after the grow, for the first batch."""
    total = 5_000_000 if i % 3 == 0 else 100 + i
    return {"customer_id": f"c-{i % 7 + 1}", "items": [{"sku": "sku-1", "quantity": 1}],
            "total_cents": total, "country": "FR"}  # fmt: skip


def placements(stack: Stack, topic: str) -> dict[str, list[tuple[int, int | None]]]:
    """Saga id → (partition, stamped count) of each of its records on `topic`, in offset order."""
    path = Path(stack.settings.messaging.data_dir) / "broker.db"
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            'SELECT key, partition, headers FROM records WHERE topic = ? ORDER BY "offset"',
            (topic,),
        ).fetchall()
    out: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for key, partition, headers in rows:
        stamp = dict(unpack_headers(headers)).get(PARTITION_COUNT_HEADER)
        out[bytes(key).decode()].append((partition, int(stamp) if stamp else None))
    return out


async def grow(stack: Stack, service: str) -> str:
    result = await asyncio.to_thread(
        invoke, stack.settings, "topics", "grow", service, "--partitions", str(AFTER)
    )
    assert result.exit_code == 0, result.output
    return result.output


async def test_sagas_in_flight_keep_their_partitions_across_a_grow(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stack = await open_stack(
        "embedded", tmp_path / "data", Servers.of("embedded", request),
        partitions=BEFORE, metadata_max_age_ms=REFRESH_MS,
    )  # fmt: skip
    try:
        await stack.roles.start_examples()
        orchestrator = await stack.roles.start_orchestrator(SagaRegistry([place_order]))
        requests = stack.topics.requests("inventory")
        replies = stack.topics.replies("orchestrator")

        # The first batch waits on inventory, stopped, while its topic and the reply topic grow.
        await stack.roles.stop_participant("inventory")
        first = [str(uuid.uuid4()) for _ in range(30)]
        await stack.client.start_sagas(
            [(s, place_order.saga_type, order(i)) for i, s in enumerate(first)]
        )
        await eventually(
            lambda: len(placements(stack, requests)) == len(first),
            timeout_s=20, what="the first batch's reserve commands",
        )  # fmt: skip
        assert "sagas in flight keep their partitions" in await grow(stack, "inventory")
        await grow(stack, "orchestrator")
        await eventually(
            lambda: orchestrator.partition_counts.get(requests) == AFTER
            and orchestrator.partition_counts.get(replies) == AFTER,
            timeout_s=10, what="the orchestrator adopting the grown counts",
        )  # fmt: skip
        second = [str(uuid.uuid4()) for _ in range(30)]
        await stack.client.start_sagas(
            [(s, place_order.saga_type, order(i)) for i, s in enumerate(second)]
        )
        await stack.roles.start_participant(example("inventory"))

        statuses = await stack.wait_terminal(first + second, timeout_s=60)
        assert set(statuses.values()) == {"completed", "compensated"}
        assert "compensated" in {statuses[s] for s in first}

        for topic in (requests, replies):
            placed = placements(stack, topic)
            count = {s: BEFORE for s in first} | {s: AFTER for s in second}
            split = {s: placed[s] for s in count if len({p for p, _ in placed[s]}) != 1}
            assert not split, (topic, split)  # one partition each: consumed in order
            for saga_id in first + second:
                wanted = default_partition(saga_id.encode(), count[saga_id])
                assert set(placed[saga_id]) == {(wanted, count[saga_id])}, (topic, saga_id)
            assert max(p for s in second for p, _ in placed[s]) >= BEFORE, topic
        release = placements(stack, requests)
        assert any(len(release[s]) > 1 for s in first)  # a command sent after the grow, kept

        engines = stack.engines
        report = audit(
            await load_snapshot(
                engines["inventory"], engines["payments"], engines["shipping"],
                engines["orchestrator"],
            )
        )  # fmt: skip
        assert report.clean, report.lines()
    finally:
        await stack.close()
