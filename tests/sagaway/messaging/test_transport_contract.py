"""One contract, both transports: the embedded broker must behave like Kafka (here: tansu)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence

import orjson
import pytest

from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.envelope import Message, command
from sagaway.messaging.processing import RecordProcessor
from sagaway.messaging.records import Record
from sagaway.messaging.transport import CommitFailed, Subscription, Transport, TransportError
from sagaway.settings.composed import Settings
from tests.fixtures.broker import MakeTransport
from tests.harness.waiting import eventually

pytestmark = pytest.mark.timeout(90)


def group(settings: Settings, name: str) -> str:
    return f"{settings.messaging.topic_prefix}{name}-{uuid.uuid4().hex[:6]}"


def message(saga_id: str, index: int) -> Message:
    return command("inventory.reserve", {"i": index}, saga_id=saga_id, attempt=1)


async def consume(
    subscription: Subscription, count: int, timeout_s: float = 30.0, commit: bool = False
) -> list[Record]:
    """Fetch until `count` records arrived (or fail after `timeout_s`)."""
    out: list[Record] = []

    async def enough() -> bool:
        batch = await subscription.fetch(500, 100)
        if commit and batch:
            await subscription.commit(batch)
        out.extend(batch)
        return len(out) >= count

    if count:
        await eventually(
            enough,
            timeout_s=timeout_s,
            what=lambda: f"{count} records (got {len(out)})",
            interval_s=0,
        )
    return out


async def fetch_nothing(subscription: Subscription, seconds: float) -> list[Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out: list[Record] = []
    while loop.time() < deadline:
        out.extend(await subscription.fetch(500, 50))
    return out


async def read_topic(
    transport: Transport, settings: Settings, topic: str, count: int
) -> list[Record]:
    """Every record of `topic` (expecting `count`), through a throwaway group."""
    subscription = transport.subscribe(group(settings, "reader"), [topic])
    await subscription.start()
    try:
        return await consume(subscription, count)
    finally:
        await subscription.close()


async def test_records_of_one_key_keep_their_order_and_their_kafka_partition(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "orders.requests"
    # 3, not tansu's auto-creation default of 4: the count we asked for must be the one used.
    await transport.create_topics({topic: 3})
    keys = [f"saga-{n}" for n in range(6)]
    for batch in range(5):
        await transport.produce(
            [message(key, batch * 10 + i).to_record(topic) for i in range(10) for key in keys]
        )
    subscription = transport.subscribe(group(broker_settings, "order"), [topic])
    await subscription.start()
    records = await consume(subscription, 300)
    await subscription.close()

    by_key: dict[bytes, list[Record]] = defaultdict(list)
    for record in records:
        assert record.key is not None
        by_key[record.key].append(record)
    assert sorted(by_key) == sorted(k.encode() for k in keys)
    assert {r.partition for r in records} == {0, 1, 2}
    for key, mine in by_key.items():
        assert [orjson.loads(r.value)["i"] for r in mine] == list(range(50))
        assert {r.partition for r in mine} == {default_partition(key, 3)}
        offsets = [r.offset for r in mine]
        assert offsets == sorted(offsets)


async def test_partition_counts_are_the_brokers_and_leave_out_missing_topics(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    prefix = broker_settings.messaging.topic_prefix
    await transport.create_topics({prefix + "a.requests": 3, prefix + "b.requests": 5})
    counts = await transport.partition_counts(
        [prefix + "a.requests", prefix + "b.requests", prefix + "absent"]
    )
    assert counts == {prefix + "a.requests": 3, prefix + "b.requests": 5}
    assert await transport.partition_counts([]) == {}


async def test_a_record_for_a_partition_the_topic_lacks_is_refused_saying_so(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    """A stamped record past the topic's count (its metadata read again first on Kafka) fails
    with the topic and the partition named, instead of an assertion deep in the client."""
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "c.requests"
    await transport.create_topics({topic: 3})
    with pytest.raises(TransportError, match="c.requests") as refused:
        await transport.produce([Record(topic=topic, value=b"{}", key=b"k", partition=7)])
    assert "partition" in str(refused.value)
    await transport.produce([Record(topic=topic, value=b"{}", key=b"k", partition=2)])
    assert (await transport.partition_counts([topic])) == {topic: 3}


async def test_two_members_split_the_partitions_and_the_survivor_takes_them_all(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "split.requests"
    await transport.create_topics({topic: 4})
    group_id = group(broker_settings, "split")
    everything = frozenset((topic, p) for p in range(4))
    first = transport.subscribe(group_id, [topic])
    await first.start()
    second = transport.subscribe(group_id, [topic])
    try:
        await until(lambda: first.assignment() == everything, [first])
        await second.start()
        await until(
            lambda: (
                bool(first.assignment())
                and bool(second.assignment())
                and first.assignment() | second.assignment() == everything
                and not first.assignment() & second.assignment()
            ),
            [first, second],
        )
        # Each member gets the records of its own partitions.
        await transport.produce([message(f"s{n}", n).to_record(topic) for n in range(40)])
        got_first, got_second = await asyncio.gather(
            consume_for(first, 2.0), consume_for(second, 2.0)
        )
        assert {(r.topic, r.partition) for r in got_first} <= first.assignment()
        assert {(r.topic, r.partition) for r in got_second} <= second.assignment()
        assert len(got_first) + len(got_second) >= 40
        await first.commit(got_first)
        await second.commit(got_second)
    finally:
        await second.close()
    await until(lambda: first.assignment() == everything, [first])
    await first.close()


async def consume_for(subscription: Subscription, seconds: float) -> list[Record]:
    return await fetch_nothing(subscription, seconds)


async def until(
    condition: Callable[[], bool], members: Sequence[Subscription], timeout_s: float = 30.0
) -> None:
    """Keep the members polling (as a consumer loop would) until `condition()` holds."""

    async def reached() -> bool:
        if condition():
            return True
        await asyncio.gather(*(m.fetch(1, 20) for m in members))
        # Records fetched while waiting are not committed, so they come again; nothing is lost.
        return False

    await eventually(
        reached,
        timeout_s=timeout_s,
        what=lambda: (
            "the assignment wanted: " + ", ".join(str(sorted(m.assignment())) for m in members)
        ),
        interval_s=0,
    )


async def test_a_new_member_resumes_after_the_committed_offset_and_gets_uncommitted_again(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "resume.requests"
    await transport.create_topics({topic: 1})
    await transport.produce([message("r", n).to_record(topic) for n in range(10)])
    group_id = group(broker_settings, "resume")

    first = transport.subscribe(group_id, [topic])
    await first.start()
    records = await consume(first, 10)
    assert [r.offset for r in records] == list(range(10))
    await first.commit(records[:6])
    await first.close()

    second = transport.subscribe(group_id, [topic])
    await second.start()
    again = await consume(second, 4)
    assert [r.offset for r in again] == [6, 7, 8, 9]
    assert [orjson.loads(r.value)["i"] for r in again] == [6, 7, 8, 9]
    assert await fetch_nothing(second, 0.3) == []
    await second.commit(again)
    await second.close()


async def test_commit_of_a_partition_the_member_does_not_own_fails(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "foreign.requests"
    await transport.create_topics({topic: 1})
    subscription = transport.subscribe(group(broker_settings, "foreign"), [topic])
    await subscription.start()
    try:
        stranger = Record(topic=topic + "-other", value=b"{}", partition=0, offset=3)
        with pytest.raises(CommitFailed):
            await subscription.commit([stranger])
    finally:
        await subscription.close()


def poison_records(topic: str) -> list[tuple[str, Record]]:
    """(what is wrong, record) for every kind of bad input a consumer must survive."""
    good = message("poison", 0).to_record(topic)
    headers = dict(good.headers)
    return [
        (
            "random bytes",
            Record(topic=topic, key=b"poison", value=os.urandom(64), headers=good.headers),
        ),
        ("missing headers", Record(topic=topic, key=b"poison", value=b'{"i": 1}')),
        ("invalid JSON", Record(topic=topic, key=b"poison", value=b'{"i": ', headers=good.headers)),
        (
            "header is not UTF-8",
            Record(
                topic=topic,
                key=b"poison",
                value=good.value,
                headers=tuple((k, b"\xff\xfe" if k == "command" else v) for k, v in good.headers),
            ),
        ),
        (
            "attempt is not an integer",
            Record(
                topic=topic,
                key=b"poison",
                value=good.value,
                headers=tuple({**headers, "attempt": b"x"}.items()),
            ),
        ),
    ]


EXPECTED_ERRORS = {
    "random bytes": "value is not UTF-8 JSON",
    "missing headers": "missing header(s)",
    "invalid JSON": "value is not UTF-8 JSON",
    "header is not UTF-8": "header command is not UTF-8",
    "attempt is not an integer": "header attempt is not an integer",
}


async def test_poison_records_go_to_the_dlq_with_their_error_and_the_consumer_goes_on(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "poison.requests"
    await transport.create_topics({topic: 1})
    poison = poison_records(topic)
    first = message("poison", 100).to_record(topic)
    last = message("poison", 200).to_record(topic)
    await transport.produce([first] + [record for _, record in poison] + [last])

    handled: list[Message] = []

    async def handle(batch: list[tuple[Record, Message]]) -> None:
        handled.extend(m for _, m in batch)

    processor = RecordProcessor(
        transport, broker_settings.messaging, group(broker_settings, "poison"), [topic], handle
    )
    await processor.start()
    try:
        await eventually(
            lambda: len(handled) == 2 and processor.dead_lettered == len(poison),
            timeout_s=30,
            what="the good records handled and the poison dead-lettered",
            interval_s=0.02,
        )
    finally:
        await processor.stop()
    assert [m.payload["i"] for m in handled] == [100, 200]
    assert processor.committed_batches >= 1

    letters = await read_topic(transport, broker_settings, topic + ".dlq", len(poison))
    by_offset = {int(r.header("dlq-source-offset") or b"-1"): r for r in letters}
    assert sorted(by_offset) == [1, 2, 3, 4, 5]
    for offset, (what, original) in enumerate(poison, start=1):
        letter = by_offset[offset]
        error = (letter.header("dlq-error") or b"").decode()
        assert EXPECTED_ERRORS[what] in error, (what, error)
        assert error.startswith("EnvelopeError: ")
        assert letter.value == original.value
        assert letter.key == original.key
        assert letter.header("dlq-source-topic") == topic.encode()
        assert letter.header("dlq-source-partition") == b"0"
        assert letter.header("dlq-failed-at")
        for name, value in original.headers:
            assert letter.header(name) == value


async def test_a_transient_failure_is_retried_and_a_permanent_one_is_dead_lettered(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    transport = await make_test_transport()
    topic = broker_settings.messaging.topic_prefix + "flaky.requests"
    await transport.create_topics({topic: 2})
    names = ["fine-1", "flaky", "broken", "fine-2"]
    await transport.produce(
        [
            command("inventory.reserve", {"name": n}, saga_id="s-" + n).to_record(topic)
            for n in names
        ]
    )
    done: list[str] = []
    flaky_failures = 0

    async def handle(batch: list[tuple[Record, Message]]) -> None:
        # Like a database transaction: all of the batch or nothing.
        nonlocal flaky_failures
        names_in_batch = [m.payload["name"] for _, m in batch]
        if "broken" in names_in_batch:
            raise RuntimeError("broken forever")
        if "flaky" in names_in_batch and flaky_failures < 2:
            flaky_failures += 1
            raise ConnectionError("flaky for a while")
        done.extend(names_in_batch)

    assert broker_settings.messaging.handler_retries == 2
    processor = RecordProcessor(
        transport, broker_settings.messaging, group(broker_settings, "flaky"), [topic], handle
    )
    await processor.start()
    try:
        await eventually(
            lambda: len(done) == 3 and processor.dead_lettered == 1,
            timeout_s=30,
            what="three records handled and one dead-lettered",
            interval_s=0.02,
        )
    finally:
        await processor.stop()
    assert sorted(done) == ["fine-1", "fine-2", "flaky"]
    letters = await read_topic(transport, broker_settings, topic + ".dlq", 1)
    assert letters[0].header("dlq-error") == b"RuntimeError: broken forever"
    assert orjson.loads(letters[0].value) == {"name": "broken"}


async def test_many_concurrent_producers_lose_nothing(
    make_test_transport: MakeTransport, broker_settings: Settings
) -> None:
    producers = [await make_test_transport() for _ in range(3)]
    topic = broker_settings.messaging.topic_prefix + "many.requests"
    await producers[0].create_topics({topic: 4})

    async def produce(transport: Transport, worker: int) -> None:
        for batch in range(20):
            await transport.produce(
                [message(f"w{worker}", batch * 10 + i).to_record(topic) for i in range(10)]
            )

    await asyncio.gather(*(produce(producers[w % len(producers)], w) for w in range(8)))
    consumer = producers[0].subscribe(group(broker_settings, "many"), [topic])
    await consumer.start()
    records = await consume(consumer, 8 * 200)
    assert await fetch_nothing(consumer, 0.3) == []
    await consumer.close()
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for record in records:
        by_key[record.key].append(orjson.loads(record.value)["i"])
    assert set(by_key) == {f"w{w}".encode() for w in range(8)}
    for numbers in by_key.values():
        assert numbers == list(range(200))
