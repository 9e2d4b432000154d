"""The embedded broker keeps everything in its SQLite file: kill -9 and restarts lose nothing, and
only uncommitted records come again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.envelope import command
from sagaway.messaging.records import Record
from sagaway.messaging.transport import Subscription
from sagaway.settings.composed import Settings
from tests.harness.waiting import eventually

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[3]

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    import orjson
    from sagaway.settings import MessagingSettings
    from sagaway.messaging.embedded import EmbeddedTransport

    async def main(settings_json, topic, group, expected, commit_below):
        settings = MessagingSettings(**orjson.loads(settings_json))
        transport = EmbeddedTransport(settings)
        await transport.start()
        subscription = transport.subscribe(group, [topic])
        await subscription.start()
        got = []
        while len(got) < expected:
            got += await subscription.fetch(100, 100)
        await subscription.commit([r for r in got if r.offset < commit_below])
        print("COMMITTED", len(got), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    """
)

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    import orjson
    from sagaway.settings import MessagingSettings
    from sagaway.messaging.embedded import EmbeddedTransport
    from sagaway.messaging.records import Record

    async def main(settings_json, topic, count):
        transport = EmbeddedTransport(MessagingSettings(**orjson.loads(settings_json)))
        await transport.start()
        for i in range(count):
            record = Record(topic=topic, key=b"child", value=orjson.dumps({"i": i}))
            await transport.produce([record])
        await transport.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def python(script: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def settings_json(settings: Settings) -> str:
    return orjson.dumps(settings.messaging.model_dump(mode="json")).decode()


async def consume(subscription: Subscription, count: int, timeout_s: float = 20.0) -> list[Record]:
    out: list[Record] = []

    async def enough() -> bool:
        out.extend(await subscription.fetch(500, 100))
        return len(out) >= count

    if count:
        await eventually(
            enough,
            timeout_s=timeout_s,
            what=lambda: f"{count} records (got {len(out)})",
            interval_s=0,
        )
    return out


async def test_after_kill_9_only_the_uncommitted_records_are_delivered_again(
    embedded_settings: Settings,
) -> None:
    topic = embedded_settings.messaging.topic_prefix + "kill.requests"
    group = embedded_settings.messaging.topic_prefix + "kill-group"
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 2})
        stored = await transport.append(
            [command("x.y", {"i": i}, saga_id=f"saga-{i % 5}").to_record(topic) for i in range(30)]
        )
        child = python(CONSUMER, settings_json(embedded_settings), topic, group, "30", "4")
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
            assert line.startswith("COMMITTED 30"), line + (
                child.stderr.read() if child.stderr else ""
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        assert child.returncode == -signal.SIGKILL

        uncommitted = {(r.partition, r.offset) for r in stored if r.offset >= 4}
        assert uncommitted and len(uncommitted) < 30
        subscription = transport.subscribe(group, [topic])
        await subscription.start()
        # The killed member still looks alive until its session times out; then its
        # partitions come to us.
        again = await consume(subscription, len(uncommitted))
        again += await drain(subscription, 0.5)
        assert sorted((r.partition, r.offset) for r in again) == sorted(uncommitted)
        await subscription.close()
    finally:
        await transport.close()


async def drain(subscription: Subscription, seconds: float) -> list[Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out: list[Record] = []
    while loop.time() < deadline:
        out.extend(await subscription.fetch(500, 50))
    return out


async def test_records_topics_and_offsets_survive_closing_and_reopening(
    embedded_settings: Settings,
) -> None:
    topic = embedded_settings.messaging.topic_prefix + "reopen.requests"
    group = embedded_settings.messaging.topic_prefix + "reopen-group"
    first = EmbeddedTransport(embedded_settings.messaging)
    await first.start()
    await first.create_topics({topic: 3})
    await first.produce(
        [Record(topic=topic, key=f"k{i}".encode(), value=b"%d" % i) for i in range(12)]
    )
    subscription = first.subscribe(group, [topic])
    await subscription.start()
    records = await consume(subscription, 12)
    committed = [r for r in records if int(r.value) < 6]
    await subscription.commit(committed)
    await first.close()

    messaging = embedded_settings.messaging
    second = EmbeddedTransport(messaging.data_dir / "broker.db", messaging)
    await second.start()
    try:
        assert await second.list_topics() == {topic: 3}
        # Offsets go on densely after the restart.
        more = await second.append([Record(topic=topic, key=b"k0", value=b"12")])
        previous = [r.offset for r in records if r.partition == more[0].partition]
        assert more[0].offset == max(previous) + 1
        resumed = second.subscribe(group, [topic])
        await resumed.start()
        rest = await consume(resumed, 13 - len(committed)) + await drain(resumed, 0.3)
        # Per partition, everything after that partition's committed offset comes again.
        floor = {
            p: max((r.offset + 1 for r in committed if r.partition == p), default=0)
            for p in range(3)
        }
        expected = {
            (r.partition, r.offset) for r in records + more if r.offset >= floor[r.partition]
        }
        assert {(r.partition, r.offset) for r in rest} == expected
        await resumed.close()
    finally:
        await second.close()


async def test_two_processes_write_one_broker_file_without_losing_a_record(
    embedded_settings: Settings,
) -> None:
    topic = embedded_settings.messaging.topic_prefix + "shared.requests"
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 2})
        child = python(PRODUCER, settings_json(embedded_settings), topic, "300")
        for i in range(300):
            await transport.produce(
                [Record(topic=topic, key=b"parent", value=orjson.dumps({"i": i}))]
            )
        _, err = await asyncio.to_thread(child.communicate, timeout=30)
        assert child.returncode == 0, err
        subscription = transport.subscribe(embedded_settings.messaging.topic_prefix + "g", [topic])
        await subscription.start()
        records = await consume(subscription, 600)
        by_key: dict[bytes | None, list[int]] = {b"parent": [], b"child": []}
        for record in records:
            by_key[record.key].append(orjson.loads(record.value)["i"])
        assert by_key == {b"parent": list(range(300)), b"child": list(range(300))}
        offsets = sorted((r.partition, r.offset) for r in records)
        assert len(set(offsets)) == 600
        await subscription.close()
    finally:
        await transport.close()


async def test_pruning_removes_only_old_records_every_group_has_committed(
    embedded_settings: Settings,
) -> None:
    topic = embedded_settings.messaging.topic_prefix + "prune.requests"
    dlq = topic + ".dlq"
    transport = EmbeddedTransport(embedded_settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 1, dlq: 1})
        await transport.produce([Record(topic=topic, value=b"%d" % i) for i in range(10)])
        await transport.produce([Record(topic=dlq, value=b"letter")])
        fast = transport.subscribe(embedded_settings.messaging.topic_prefix + "fast", [topic])
        slow = transport.subscribe(embedded_settings.messaging.topic_prefix + "slow", [topic])
        await fast.start()
        await slow.start()
        await fast.commit((await consume(fast, 10))[:8])
        await slow.commit((await consume(slow, 10))[:5])
        assert await transport.prune(retention_s=3600) == 0  # too young
        await asyncio.sleep(0.01)
        assert await transport.prune(retention_s=0) == 5  # below the slowest group's offset
        await fast.close()
        await slow.close()
        again = transport.subscribe(embedded_settings.messaging.topic_prefix + "slow", [topic])
        await again.start()
        assert [r.value for r in await consume(again, 5)] == [b"%d" % i for i in range(5, 10)]
        await again.close()
        letters = transport.subscribe(embedded_settings.messaging.topic_prefix + "console", [dlq])
        await letters.start()
        assert [r.value for r in await consume(letters, 1)] == [b"letter"]
        await letters.close()
    finally:
        await transport.close()
