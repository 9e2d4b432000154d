"""The embedded broker's own rules: Kafka's partitioner, a deterministic group assignment, and
commits refused for partitions that moved to another member."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.embedded.bell import Bell
from sagaway.messaging.embedded.membership import assign
from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.embedded.store import UnknownTopic
from sagaway.messaging.records import Record
from sagaway.messaging.transport import CommitFailed
from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually

pytestmark = pytest.mark.timeout(60)


@given(key=st.binary(min_size=0, max_size=40), partitions=st.integers(1, 64))
def test_keyed_records_pick_the_partition_kafkas_default_partitioner_picks(
    key: bytes, partitions: int
) -> None:
    everything = list(range(partitions))
    assert default_partition(key, partitions) == DefaultPartitioner()(key, everything, everything)


@given(
    members=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6, unique=True),
    counts=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 9), min_size=1),
)
def test_every_partition_has_exactly_one_owner_and_shares_differ_by_at_most_one(
    members: list[str], counts: dict[str, int]
) -> None:
    subscribed = [(m, tuple(counts)) for m in members]
    owned = assign(subscribed, counts)
    assert owned == assign(list(reversed(subscribed)), counts)  # the same whoever computes it
    all_owned = [tp for tps in owned.values() for tp in tps]
    assert sorted(all_owned) == sorted((t, p) for t, n in counts.items() for p in range(n))
    for topic in counts:
        shares = [len([tp for tp in owned[m] if tp[0] == topic]) for m in members]
        assert max(shares) - min(shares) <= 1


def test_members_only_get_partitions_of_topics_they_subscribed() -> None:
    owned = assign([("m1", ("a",)), ("m2", ("a", "b"))], {"a": 2, "b": 2})
    assert owned == {"m1": frozenset({("a", 0)}), "m2": frozenset({("a", 1), ("b", 0), ("b", 1)})}


async def test_producing_to_a_topic_nobody_created_is_refused(embedded_settings: Settings) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        with pytest.raises(UnknownTopic, match="create them first"):
            await transport.produce([Record(topic="nowhere", value=b"{}")])
    finally:
        await transport.close()


async def test_a_topic_created_after_its_group_formed_is_assigned_and_committable(
    embedded_settings: Settings,
) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        early = embedded_settings.messaging.topic_prefix + "early.requests"
        late = embedded_settings.messaging.topic_prefix + "late.requests"
        await transport.create_topics({early: 1})
        member = transport.subscribe("latecomers", [early, late])
        await member.start()
        assert member.assignment() == {(early, 0)}
        # The same membership, dealt again once the topic exists (not a remembered deal).
        await transport.create_topics({late: 2})
        await transport.produce([Record(topic=late, value=b"x", key=b"k")])
        records: list[Record] = []
        for _ in range(100):
            records += await member.fetch(10, 50)
            if records:
                break
        assert member.assignment() == {(early, 0), (late, 0), (late, 1)}
        await member.commit(records)  # owned: no CommitFailed
        await member.close()
    finally:
        await transport.close()


async def test_a_member_whose_partition_moved_commits_the_rest_and_is_told_about_it(
    embedded_settings: Settings,
) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        topic = embedded_settings.messaging.topic_prefix + "moved.requests"
        await transport.create_topics({topic: 2})
        await transport.produce([Record(topic=topic, value=b"%d" % i) for i in range(10)])
        old = transport.subscribe("moved", [topic])
        await old.start()
        records: list[Record] = []
        while len(records) < 10:
            records += await old.fetch(100, 100)
        assert old.assignment() == {(topic, 0), (topic, 1)}

        new = transport.subscribe("moved", [topic])
        await new.start()
        # The newcomer sorts after `old`, so it takes partition 1 at once.
        assert new.assignment() == {(topic, 1)}
        with pytest.raises(CommitFailed, match=r"\[1\]"):
            await old.commit(records)
        await asyncio.sleep(embedded_settings.messaging.heartbeat_interval_ms / 1000 * 2)
        assert old.assignment() == {(topic, 0)}

        # Partition 0 was committed, partition 1 was not: the newcomer reads all of 1.
        again: list[Record] = []
        for _ in range(20):
            again += await new.fetch(100, 50)
        assert sorted(r.offset for r in again) == sorted(
            r.offset for r in records if r.partition == 1
        )
        assert {r.partition for r in again} == {1}
        await old.close()
        # Partition 0 moves over too, and nothing of it comes again: its commit was stored.

        async def took_both() -> bool:
            if new.assignment() == {(topic, 0), (topic, 1)}:
                return True
            assert await new.fetch(100, 50) == []
            return False

        await eventually(took_both, timeout_s=5, what="partition 0 to move over", interval_s=0)
        assert await new.fetch(100, 300) == []
        await new.close()
    finally:
        await transport.close()


def test_a_later_member_sorts_after_an_earlier_one_even_in_the_same_millisecond(
    embedded_settings: Settings,
) -> None:
    transport = EmbeddedTransport(embedded_settings.messaging)
    ids = [transport.subscribe("same-ms", ["t"]).member_id for _ in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


async def test_a_produce_wakes_the_readers_of_its_topic_and_no_others() -> None:
    bell = Bell()
    orders, payments = frozenset({"orders"}), frozenset({"payments", "refunds"})
    loop = asyncio.get_running_loop()
    seen = bell.generation(payments)
    waiting = asyncio.create_task(bell.wait(payments, seen, timeout_s=5))
    await asyncio.sleep(0.01)
    bell.ring({"orders"})
    await asyncio.sleep(0.05)
    assert not waiting.done()  # another topic's record: still asleep
    assert bell.generation(payments) == seen and bell.generation(orders) != 0
    started = loop.time()
    bell.ring({"refunds"})
    await asyncio.wait_for(waiting, 1)
    assert loop.time() - started < 0.5
    # A ring that came before the wait makes it return at once.
    await asyncio.wait_for(bell.wait(payments, seen, timeout_s=5), 0.5)


async def test_a_ring_on_the_waiters_loop_skips_the_self_pipe_and_one_from_a_thread_wakes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bell = Bell()
    topics = frozenset({"orders"})
    loop = asyncio.get_running_loop()
    pipe_writes: list[int] = []
    write = loop._write_to_self  # type: ignore[attr-defined]

    def counted_write() -> None:
        pipe_writes.append(1)
        write()

    monkeypatch.setattr(loop, "_write_to_self", counted_write)
    waiting = asyncio.create_task(bell.wait(topics, bell.generation(topics), timeout_s=5))
    await asyncio.sleep(0.01)
    bell.ring(topics)  # a produce of this process, on its loop
    await asyncio.wait_for(waiting, 1)
    assert pipe_writes == []
    waiting = asyncio.create_task(bell.wait(topics, bell.generation(topics), timeout_s=5))
    await asyncio.sleep(0.01)
    await asyncio.to_thread(bell.ring, topics)  # another thread must still wake it at once
    await asyncio.wait_for(waiting, 1)
    assert pipe_writes


async def test_a_member_reads_the_file_again_only_after_a_ring_or_the_safety_net(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a read that took everything, the next fetch waits on the bell without reading (a
    batch used to cost a second, empty read); a produce, or the safety-net look, reads again."""
    settings = embedded_settings.replace(embedded_poll_interval_ms=300)
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        topic = settings.messaging.topic_prefix + "quiet.requests"
        await transport.create_topics({topic: 2})
        member = transport.subscribe("quiet", [topic])
        await member.start()
        reads: list[int] = []
        read = transport.file.read

        def counted_read(*args: Any) -> list[Record]:
            reads.append(1)
            return read(*args)

        monkeypatch.setattr(transport.file, "read", counted_read)
        await transport.produce([Record(topic=topic, value=b"1", key=b"k")])
        assert len(await member.fetch(10, 1000)) == 1
        assert len(reads) == 1
        assert await member.fetch(10, 100) == []  # nothing rang: the file is not read
        assert len(reads) == 1
        await transport.produce([Record(topic=topic, value=b"2", key=b"k")])
        assert len(await member.fetch(10, 1000)) == 1  # the ring: read at once
        assert len(reads) == 2
        assert await member.fetch(10, 1000) == []  # the safety net still looks
        assert len(reads) >= 3
        # A full batch may have left records behind: the next fetch reads without a ring.
        await transport.produce([Record(topic=topic, value=b"x", key=b"k") for _ in range(3)])
        assert len(await member.fetch(2, 1000)) == 2
        assert len(await member.fetch(2, 0)) == 1
        await member.close()
    finally:
        await transport.close()
