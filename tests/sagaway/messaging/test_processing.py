"""The consuming loop: stopping leaves unfinished records for redelivery, and a dead letter that
cannot be written yet is retried, never dropped."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.envelope import Message, command
from sagaway.messaging.processing import DLQ_HEADERS, RecordProcessor, dead_letter
from sagaway.messaging.records import Record
from sagaway.settings.composed import Settings
from tests.fixtures.broker import MakeTransport
from tests.harness.waiting import eventually, seen_each_turn

pytestmark = pytest.mark.timeout(60)


def _numbered(topic: str, saga_id: str, numbers: range) -> list[Record]:
    return [command("a.b", {"i": i}, saga_id=saga_id).to_record(topic) for i in numbers]


def test_a_dead_letter_keeps_the_record_and_says_where_it_came_from() -> None:
    original = Record(
        topic="payments.requests",
        key=b"saga-9",
        value=b"\x00not json",
        headers=(("message-id", b"m"), ("dlq-error", b"an older error")),
        partition=3,
        offset=41,
    )
    letter = dead_letter(original, "EnvelopeError: bad", failed_at="2026-11-26T15:00:00Z")
    assert letter.topic == "payments.requests.dlq"
    assert (letter.key, letter.value) == (original.key, original.value)
    assert letter.partition == -1
    assert dict(letter.headers) == {
        "message-id": b"m",
        "dlq-error": b"EnvelopeError: bad",
        "dlq-source-topic": b"payments.requests",
        "dlq-source-partition": b"3",
        "dlq-source-offset": b"41",
        "dlq-failed-at": b"2026-11-26T15:00:00Z",
    }
    assert [name for name, _ in letter.headers if name in DLQ_HEADERS] == list(DLQ_HEADERS)


async def test_stopping_mid_batch_leaves_the_batch_for_the_next_member(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "stop.requests"
    await transport.create_topics({topic: 1})
    await transport.produce(_numbered(topic, "stop", range(5)))
    group_id = f"{broker_settings.messaging.topic_prefix}stop-{uuid.uuid4().hex[:6]}"
    entered = asyncio.Event()

    async def hang(batch: list[tuple[Record, Message]]) -> None:
        entered.set()
        await asyncio.Event().wait()

    first = RecordProcessor(transport, broker_settings.messaging, group_id, [topic], hang)
    await first.start()
    await asyncio.wait_for(entered.wait(), 30)
    await first.stop(grace_s=0.2)
    assert not first.running
    assert first.committed_batches == 0

    seen: list[int] = []

    async def record_them(batch: list[tuple[Record, Message]]) -> None:
        seen.extend(m.payload["i"] for _, m in batch)

    second = RecordProcessor(transport, broker_settings.messaging, group_id, [topic], record_them)
    await second.start()
    try:
        await eventually(
            lambda: len(seen) >= 5,
            timeout_s=30,
            what="the next member to get the batch",
            interval_s=0.02,
        )
    finally:
        await second.stop()
    assert seen == [0, 1, 2, 3, 4]


async def test_an_idle_processor_stops_promptly(embedded_settings: Settings) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        topic = embedded_settings.messaging.topic_prefix + "idle.requests"
        await transport.create_topics({topic: 1})

        async def nothing(batch: list[tuple[Record, Message]]) -> None:
            return None

        messaging = embedded_settings.messaging
        processor = RecordProcessor(transport, messaging, "idle", [topic], nothing)
        await processor.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await processor.stop()
        await processor.join()
        assert loop.time() - started < 1.0
    finally:
        await transport.close()


async def test_a_backlog_is_drained_batch_by_batch_letting_the_loop_run_between(
    embedded_settings: Settings,
) -> None:
    """On the embedded broker (and inline SQLite) nothing in a batch suspends; the processor
    still gives the loop a turn after each batch, so the relay of its process publishes what
    the first batch wrote while the next is handled (docs/benchmarks.md, "Round seven")."""
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        topic = embedded_settings.messaging.topic_prefix + "backlog.requests"
        await transport.create_topics({topic: 1})
        await transport.produce(_numbered(topic, "backlog", range(10)))
        batches: list[int] = []

        async def handle(batch: list[tuple[Record, Message]]) -> None:
            batches.append(len(batch))

        processor = RecordProcessor(
            transport, embedded_settings.messaging, "backlog", [topic], handle, max_records=2
        )
        async with seen_each_turn(lambda: processor.handled) as seen_between:
            await processor.start()
            try:
                await eventually(lambda: processor.handled == 10, timeout_s=30, what="the backlog")
            finally:
                await processor.stop()
        assert batches == [2, 2, 2, 2, 2]
        assert {2, 4, 6, 8} <= set(seen_between)
    finally:
        await transport.close()


async def test_stop_abandons_a_fetch_waiting_for_records_at_once(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    """A fetch may wait long for records (nothing to do costs nothing at rest), but stop() does
    not wait for it to end: with nothing in hand there is nothing to finish."""
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "long-fetch.requests"
    await transport.create_topics({topic: 1})

    async def nothing(batch: list[tuple[Record, Message]]) -> None:
        return None

    group_id = f"{broker_settings.messaging.topic_prefix}long-{uuid.uuid4().hex[:6]}"
    processor = RecordProcessor(
        transport, broker_settings.messaging, group_id, [topic], nothing, poll_timeout_ms=600_000
    )
    await processor.start()
    await processor.wait_assigned()
    stopping = asyncio.create_task(processor.stop(grace_s=600))
    await eventually(lambda: not processor.running, timeout_s=10, what="the processor to stop")
    await stopping


async def test_a_dead_letter_that_cannot_be_written_is_retried_and_not_committed(
    embedded_settings: Settings,
) -> None:
    # The embedded broker refuses records for a topic that does not exist: the DLQ write fails
    # until the topic is created, and the bad record must neither be lost nor committed past.
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        topic = embedded_settings.messaging.topic_prefix + "nodlq.requests"
        await transport.create_topics({topic: 1})
        await transport.produce([Record(topic=topic, value=b"garbage")])
        handled: list[Message] = []

        async def handle(batch: list[tuple[Record, Message]]) -> None:
            handled.extend(m for _, m in batch)

        processor = RecordProcessor(
            transport, embedded_settings.messaging, "nodlq", [topic], handle, create_topics=False
        )
        await processor.start()
        await asyncio.sleep(0.5)
        assert processor.dead_lettered == 0
        assert processor.committed_batches == 0
        await transport.create_topics({topic + ".dlq": 1})
        await eventually(
            lambda: processor.dead_lettered == 1 and processor.committed_batches == 1,
            timeout_s=30,
            what="the dead letter written and its batch committed",
            interval_s=0.02,
        )
        await processor.stop()
        reader = transport.subscribe("reader", [topic + ".dlq"])
        await reader.start()
        letters = await reader.fetch(10, 2000)
        await reader.close()
        assert [r.value for r in letters] == [b"garbage"]
        assert (letters[0].header("dlq-error") or b"").startswith(b"EnvelopeError: ")
    finally:
        await transport.close()


@pytest.mark.parametrize(("interval_ms", "commits"), [(60_000, 1), (0, 6)])
async def test_handled_offsets_are_held_and_committed_once_the_loop_is_idle(
    make_test_transport: MakeTransport, broker_settings: Settings, interval_ms: int, commits: int
) -> None:
    """Six one-record batches in a row cost one commit, made when the loop finds nothing more,
    not one commit each (every hop's broker write at low load); 0 commits every batch."""
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "held.requests"
    await transport.create_topics({topic: 1})
    await transport.produce(_numbered(topic, "held", range(6)))
    seen: list[int] = []

    async def record_them(batch: list[tuple[Record, Message]]) -> None:
        seen.extend(m.payload["i"] for _, m in batch)

    messaging = broker_settings.messaging.model_copy(
        update={"consumer_commit_interval_ms": interval_ms}
    )
    group_id = f"{broker_settings.messaging.topic_prefix}held-{uuid.uuid4().hex[:6]}"
    processor = RecordProcessor(
        transport, messaging, group_id, [topic], record_them, max_records=1, poll_timeout_ms=300
    )
    await processor.start()
    try:
        await eventually(
            lambda: len(seen) == 6 and processor.committed_batches == commits,
            timeout_s=30,
            what=f"six records handled and {commits} commit(s)",
            interval_s=0.02,
        )
        await asyncio.sleep(0.7)  # two more idle fetches: nothing left to commit
        assert processor.committed_batches == commits
    finally:
        await processor.stop()
    assert seen == [0, 1, 2, 3, 4, 5]


async def test_a_clean_stop_commits_the_offsets_it_held(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    """Nothing was committed while the loop ran (a long interval, a long fetch wait); stop()
    commits it, so the next member of the group starts after the handled records."""
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "held-stop.requests"
    await transport.create_topics({topic: 1})
    await transport.produce(_numbered(topic, "held-stop", range(3)))
    messaging = broker_settings.messaging.model_copy(
        update={"consumer_commit_interval_ms": 600_000}
    )
    group_id = f"{broker_settings.messaging.topic_prefix}held-stop-{uuid.uuid4().hex[:6]}"
    first_seen: list[int] = []

    async def first_handler(batch: list[tuple[Record, Message]]) -> None:
        first_seen.extend(m.payload["i"] for _, m in batch)

    first = RecordProcessor(
        transport, messaging, group_id, [topic], first_handler, poll_timeout_ms=600_000
    )
    await first.start()
    await eventually(lambda: len(first_seen) == 3, timeout_s=30, what="the first member")
    assert first.committed_batches == 0
    await first.stop()
    assert first.committed_batches == 1

    second_seen: list[int] = []

    async def second_handler(batch: list[tuple[Record, Message]]) -> None:
        second_seen.extend(m.payload["i"] for _, m in batch)

    await transport.produce(_numbered(topic, "held-stop", range(3, 4)))
    second = RecordProcessor(transport, messaging, group_id, [topic], second_handler)
    await second.start()
    try:
        await eventually(lambda: second_seen, timeout_s=30, what="the second member")
        await asyncio.sleep(0.3)
    finally:
        await second.stop()
    assert first_seen == [0, 1, 2]
    assert second_seen == [3]
