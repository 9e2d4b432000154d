"""Processes sharing one embedded broker file wake each other's consumers at once (a datagram per
produce), not at their next poll; dead peers' sockets are cleared, and a lost wake-up rings all."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.embedded.crossbell import MAX_TOPICS_BYTES, bells_dir
from sagaway.messaging.embedded.store import BrokerFile
from sagaway.messaging.records import Record
from sagaway.messaging.transport import Subscription
from sagaway.settings.composed import Settings
from tests.fixtures.broker import tuned_settings

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[3]
# Long enough that a consumer found its record by polling fails the test by far.
POLL_MS = 30_000
WOKEN_WITHIN_S = 5.0

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    import orjson
    from sagaway.settings import MessagingSettings
    from sagaway.messaging.embedded import EmbeddedTransport
    from sagaway.messaging.records import Record

    async def main(settings_json, listen, answer):
        transport = EmbeddedTransport(MessagingSettings(**orjson.loads(settings_json)))
        await transport.start()
        subscription = transport.subscribe("child", [listen])
        await subscription.start()
        print("READY", flush=True)
        records = []
        while not records:
            records = await subscription.fetch(10, 120_000)
        print("GOT", time.time(), flush=True)
        if answer:
            sent = time.time()
            await transport.produce([Record(topic=answer, value=b"answer")])
            print("SENT", sent, flush=True)
        await subscription.close()
        await transport.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A data dir under /tmp: pytest's tmp_path can be too long for an AF_UNIX socket path."""
    with tempfile.TemporaryDirectory(prefix="bells-", dir="/tmp") as name:
        yield Path(name)


@pytest.fixture
def settings(short_dir: Path) -> Settings:
    return tuned_settings(short_dir / "data", embedded_poll_interval_ms=POLL_MS)


async def spawn(settings: Settings, listen: str, answer: str = "") -> asyncio.subprocess.Process:
    """A child process on the same broker file that consumes one record of `listen`, then
    produces one to `answer` (if given)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        orjson.dumps(settings.messaging.model_dump(mode="json")).decode(),
        listen,
        answer,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await said(child, "READY")
    await asyncio.sleep(0.5)  # let it reach its wait, so only a wake-up can end it early
    return child


async def said(child: asyncio.subprocess.Process, word: str) -> float:
    """Wait for the child's next line, which must start with `word`; the time it carries, if any."""
    assert child.stdout is not None and child.stderr is not None
    line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
    if not line.startswith(word):
        await asyncio.wait_for(child.wait(), 10)
        raise AssertionError(f"child said {line!r}, not {word}:\n{(await child.stderr.read())!r}")
    fields = line.split()
    return float(fields[1]) if len(fields) > 1 else 0.0


async def finish(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        try:
            await asyncio.wait_for(child.wait(), 30)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert child.returncode == 0


async def first_record(subscription: Subscription) -> float:
    while not await subscription.fetch(10, 120_000):
        pass
    return time.time()


def sockets(settings: Settings) -> list[str]:
    directory = bells_dir(Path(settings.messaging.data_dir) / "broker.db")
    return sorted(os.listdir(directory)) if directory.exists() else []


async def test_a_record_from_another_process_wakes_a_consumer_before_its_poll_both_ways(
    settings: Settings,
) -> None:
    prefix = settings.messaging.topic_prefix
    there, back = prefix + "there", prefix + "back"
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({there: 2, back: 2})
        subscription = transport.subscribe("parent", [back])
        await subscription.start()
        answered = asyncio.create_task(first_record(subscription))
        child = await spawn(settings, listen=there, answer=back)
        try:
            sent = time.time()
            await transport.produce([Record(topic=there, value=b"hello")])
            assert await said(child, "GOT") - sent < WOKEN_WITHIN_S
            child_sent = await said(child, "SENT")
            assert await asyncio.wait_for(answered, 60) - child_sent < WOKEN_WITHIN_S
        finally:
            answered.cancel()
            await finish(child)
        await subscription.close()
    finally:
        await transport.close()


async def test_a_dead_peers_socket_file_is_removed_on_the_next_produce(settings: Settings) -> None:
    topic = settings.messaging.topic_prefix + "orders"
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 1})
        directory = bells_dir(transport.path)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(directory / "0-dead.sock"))
        dead.close()  # its file stays, as after a kill -9
        live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        live.bind(str(directory / "0-live.sock"))
        live.setblocking(False)
        try:
            (stored,) = await transport.append([Record(topic=topic, value=b"{}")])
            assert stored.offset == 0
            assert not (directory / "0-dead.sock").exists()
            assert live.recv(4096) == topic.encode()
        finally:
            live.close()
    finally:
        await transport.close()


async def test_a_produce_without_peers_works_and_too_many_topic_names_wake_every_topic(
    settings: Settings,
) -> None:
    topics = [settings.messaging.topic_prefix + f"topic-{i:02d}-" + "x" * 60 for i in range(40)]
    assert len("\n".join(topics)) > MAX_TOPICS_BYTES
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics(dict.fromkeys(topics, 1))
        await transport.produce([Record(topic=topics[0], value=b"alone")])
        assert len(sockets(settings)) == 1  # ours only
        child = await spawn(settings, listen=topics[-1])
        try:
            sent = time.time()
            await transport.produce([Record(topic=t, value=b"{}") for t in topics])
            assert await said(child, "GOT") - sent < WOKEN_WITHIN_S
        finally:
            await finish(child)
    finally:
        await transport.close()


async def test_a_full_socket_queue_wakes_every_topic_since_a_wake_up_was_lost(
    settings: Settings,
) -> None:
    topic = settings.messaging.topic_prefix + "orders"
    transport = EmbeddedTransport(settings.messaging)
    await transport.start()
    try:
        await transport.create_topics({topic: 1})
        subscription = transport.subscribe("parent", [topic])
        await subscription.start()
        woken = asyncio.create_task(first_record(subscription))
        await asyncio.sleep(0.3)
        (ours,) = sockets(settings)
        # Another writer's record, and its wake-up refused by our full queue: all of it before
        # the event loop reads the socket again.
        writer = BrokerFile(transport.path)
        writer.append([Record(topic=topic, value=b"{}")])
        writer.close()
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        sent = time.time()
        try:
            with pytest.raises(BlockingIOError):
                while True:
                    sender.sendto(b"elsewhere", str(bells_dir(transport.path) / ours))
            with pytest.raises(BlockingIOError):
                sender.sendto(topic.encode(), str(bells_dir(transport.path) / ours))
            assert await asyncio.wait_for(woken, 60) - sent < WOKEN_WITHIN_S
        finally:
            sender.close()
            woken.cancel()
        await subscription.close()
    finally:
        await transport.close()


async def test_transports_on_one_file_share_a_socket_the_last_close_removes(
    settings: Settings,
) -> None:
    first, second = EmbeddedTransport(settings.messaging), EmbeddedTransport(settings.messaging)
    await first.start()
    await second.start()
    (ours,) = sockets(settings)
    assert ours.startswith(f"{os.getpid()}-")
    await first.close()
    assert sockets(settings) == [ours]
    await second.close()
    assert sockets(settings) == []


async def test_a_socket_path_too_long_leaves_polling_alone_with_one_info_line(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tuned_settings(short_dir / ("d" * 100))
    topic = settings.messaging.topic_prefix + "orders"
    transport = EmbeddedTransport(settings.messaging)
    with caplog.at_level(logging.INFO, logger="sagaway.embedded"):
        await transport.start()
    try:
        await transport.create_topics({topic: 1})
        subscription = transport.subscribe("g", [topic])
        await subscription.start()
        await transport.produce([Record(topic=topic, value=b"{}")])
        assert len(await subscription.fetch(10, 5000)) == 1
        await subscription.close()
    finally:
        await transport.close()
    assert [r.levelname for r in caplog.records if "cross-process" in r.message] == ["INFO"]
    assert sockets(settings) == []
