"""The consuming loop every service runs: fetch a batch, parse, handle, dead-letter what cannot be
handled, and only then commit — so a crash at any point redelivers, and one bad record never
stops the records behind it.

Commits are held for up to `consumer_commit_interval_ms` (Kafka's auto-commit interval, done by
hand): every consumer deduplicates what it is given again (its inbox), so a held offset costs a
crash some redelivery and nothing else, while a commit per batch cost every hop a broker write
(a round trip on Kafka) at low load. Held offsets are committed when the interval ends, when a
fetch finds nothing (the loop is idle), and on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

from sagaway.messaging.envelope import EnvelopeError, Message, now_rfc3339
from sagaway.messaging.records import Record
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import CommitFailed, Subscription, Transport, TransportError
from sagaway.observability import logs
from sagaway.observability.backoff import RetryDelay
from sagaway.settings import MessagingSettings

log = logging.getLogger("sagaway.processing")

BatchHandler = Callable[[list[tuple[Record, Message]]], Awaitable[None]]

DLQ_HEADERS = (
    "dlq-error",
    "dlq-source-topic",
    "dlq-source-partition",
    "dlq-source-offset",
    "dlq-failed-at",
)
MAX_ERROR_TEXT = 4000
# Pauses between tries of something that must eventually succeed (a DLQ write, a fetch).
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# Longest a fetch waits for records before the loop turns once (a fetch returns as soon as records
# arrive, and stop() cancels a waiting fetch): a long wait costs nothing at rest.
FETCH_WAIT_MS = 5000


def describe_error(exc: BaseException) -> str:
    """The text stored in `dlq-error`: the exception type and message, bounded."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


def dead_letter(record: Record, error: str, failed_at: str | None = None) -> Record:
    """The record for `<topic>.dlq`: the original key, value and headers, plus where it came
    from and why it failed (earlier dlq-* headers are replaced: a replayed letter stays clean)."""
    headers = tuple((name, value) for name, value in record.headers if name not in DLQ_HEADERS)
    headers += (
        ("dlq-error", error.encode("utf-8", errors="replace")),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode()),
        ("dlq-failed-at", (failed_at or now_rfc3339()).encode()),
    )
    return Record(
        topic=TopicNames.dlq(record.topic), value=record.value, key=record.key, headers=headers
    )


class _Stopping(Exception):
    """Raised inside the loop to abandon a batch, uncommitted, because stop() was called."""


class RecordProcessor:
    """Consumes `topics` in consumer group `group_id`, handing parsed batches to `handle_batch`.

    `handle_batch` gets a list of (record, message) and should handle them all or raise (ideally
    in one database transaction). When it raises, the batch is retried one record at a time —
    each with `settings.handler_retries` retries and exponential backoff — and a record that still
    fails goes to `<topic>.dlq`. Records that do not parse as messages go there at once.
    Unless `create_topics=False`, the topics it reads and their DLQs are created first when
    missing (with `settings.partitions`; existing topics are left as they are).

    Run it with `await start()` (returns once the group member is started) and `await stop()`,
    or as a task: `asyncio.create_task(processor.run())`.
    """

    def __init__(
        self,
        transport: Transport,
        settings: MessagingSettings,
        group_id: str,
        topics: Sequence[str],
        handle_batch: BatchHandler,
        *,
        max_records: int | None = None,
        poll_timeout_ms: int = FETCH_WAIT_MS,
        create_topics: bool = True,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.group_id = group_id
        self.topics = tuple(topics)
        self.handle_batch = handle_batch
        self.max_records = max_records or settings.consumer_max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.create_topics = create_topics
        self.subscription: Subscription | None = None
        self.handled = 0
        self.dead_lettered = 0
        self.committed_batches = 0
        # The last handled record of each partition whose offset is not committed yet, and when
        # the oldest of them was handled (loop time).
        self._held: dict[tuple[str, int], Record] = {}
        self._held_since = 0.0
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fetching = False

    def __repr__(self) -> str:
        return f"RecordProcessor(group={self.group_id!r}, topics={list(self.topics)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loop as a task; returns once its group member has started."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"processor-{self.group_id}")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._task.done() and not self._started.is_set():
            self._task.result()  # re-raise why it ended

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish (or, after `grace_s`, abandon) the batch in hand, uncommitted if unfinished,
        and leave the group."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        if self._fetching:
            # Nothing in hand: a fetch waiting for records is abandoned at once, not at its end.
            task.cancel()
        done, _ = await asyncio.wait([task], timeout=grace_s)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def join(self) -> None:
        """Wait until the loop has ended (after stop())."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_assigned(self, timeout_s: float = 30.0) -> frozenset[tuple[str, int]]:
        """Wait until the member owns at least one partition (the group join completed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self.subscription is not None and self.subscription.assignment():
                return self.subscription.assignment()
            if self._task is not None and self._task.done():
                self._task.result()
                raise RuntimeError(f"{self!r} ended before it was assigned partitions")
            if loop.time() > deadline:
                raise TimeoutError(f"{self!r} got no partitions within {timeout_s}s")
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        """The loop itself; returns after stop()."""
        if self.create_topics:
            # Missing topics are created with the configured partition count before joining, so
            # a broker that auto-creates topics on first use never picks the count for us.
            wanted = {t: self.settings.partitions for t in self.topics}
            wanted.update({TopicNames.dlq(t): self.settings.partitions for t in self.topics})
            try:
                await self._until_done(
                    "creating topics", lambda: self.transport.create_topics(wanted)
                )
            except _Stopping:
                return
        subscription = await self._join()
        if subscription is None:
            return
        try:
            self._started.set()
            delay = RetryDelay(FIRST_BACKOFF_S, MAX_BACKOFF_S)
            while not self._stopping.is_set():
                self._fetching = True
                try:
                    records = await subscription.fetch(self.max_records, self._fetch_wait_ms())
                except TransportError as exc:
                    self._fetching = False
                    log.warning(
                        "%r: fetch failed (%s); retrying in %.1fs", self, exc, delay.delay_s
                    )
                    await delay.wait(until=self._stopping)
                    continue
                self._fetching = False
                delay.reset()
                if not records:
                    # Nothing came: the loop is idle, so what it holds is committed now.
                    await self._commit_held(subscription)
                    continue
                try:
                    await self.process(subscription, records)
                except _Stopping:
                    break
                # On inline SQLite and the embedded broker nothing above suspends, so without
                # this turn a backlog would be drained batch after batch before the relay of
                # this process could publish the first one: every saga would then move in one
                # wave and the processes would take turns instead of working side by side.
                await asyncio.sleep(0)
        finally:
            # What was handled is committed before leaving, so a clean stop redelivers nothing.
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_held(subscription)
            await subscription.close()

    async def _join(self) -> Subscription | None:
        """A started group member, retried with backoff while the broker refuses; None on stop()."""
        delay = RetryDelay(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        while not self._stopping.is_set():
            subscription = self.transport.subscribe(self.group_id, self.topics)
            self.subscription = subscription
            try:
                await subscription.start()
                return subscription
            except TransportError as exc:
                await subscription.close()
                log.warning(
                    "%r: joining the group failed (%s); retrying in %.1fs",
                    self,
                    exc,
                    delay.delay_s,
                )
                await delay.wait(until=self._stopping)
        return None

    # -- one batch ----------------------------------------------------------------------------

    async def process(self, subscription: Subscription, records: Sequence[Record]) -> None:
        """Handle or dead-letter every record of the batch, then commit it."""
        good: list[tuple[Record, Message]] = []
        letters: list[Record] = []
        for record in records:
            try:
                good.append((record, Message.from_record(record)))
            except EnvelopeError as exc:
                log.warning(
                    "%s[%d]@%d is not a valid message, dead-lettering: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
                letters.append(dead_letter(record, describe_error(exc)))
        if good:
            letters.extend(await self._handle(good))
        if letters:
            await self._until_done("writing dead letters", lambda: self.transport.produce(letters))
            self.dead_lettered += len(letters)
        self.handled += len(good)
        self._hold(records)
        interval_s = self.settings.consumer_commit_interval_ms / 1000
        if asyncio.get_running_loop().time() - self._held_since >= interval_s:
            await self._commit_held(subscription)

    def _hold(self, records: Sequence[Record]) -> None:
        """Remember the handled records' offsets until the next commit."""
        if not self._held:
            self._held_since = asyncio.get_running_loop().time()
        for record in records:
            self._held[(record.topic, record.partition)] = record

    def _fetch_wait_ms(self) -> int:
        """A fetch waits no longer than the held offsets may stay uncommitted."""
        if not self._held:
            return self.poll_timeout_ms
        due_s = self._held_since + self.settings.consumer_commit_interval_ms / 1000
        left_ms = math.ceil((due_s - asyncio.get_running_loop().time()) * 1000)
        return max(0, min(self.poll_timeout_ms, left_ms))

    async def _commit_held(self, subscription: Subscription) -> None:
        """Commit the held offsets of the partitions this member still owns. A refusal (the
        partitions moved) or a broker error drops them: a later commit covers those records, or
        they are delivered again and deduplicated."""
        if not self._held:
            return
        owned = subscription.assignment()
        records = [r for tp, r in self._held.items() if tp in owned]
        self._held = {}
        if not records:
            return
        try:
            await subscription.commit(records)
            self.committed_batches += 1
        except CommitFailed as exc:
            # The partitions moved to another member, which will get these records again.
            log.warning("%r: commit refused, records will be redelivered: %s", self, exc)
        except TransportError as exc:
            log.warning("%r: commit failed, records may be redelivered: %s", self, exc)

    async def _handle(self, batch: list[tuple[Record, Message]]) -> list[Record]:
        """Handle the batch; on failure each record alone with retries. Returns the dead letters."""
        try:
            await self.handle_batch(batch)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried then dead-lettered
            if len(batch) > 1:
                log.info(
                    "%r: batch of %d failed (%s); retrying record by record", self, len(batch), exc
                )
            first_error: Exception | None = exc if len(batch) == 1 else None
        letters: list[Record] = []
        for record, message in batch:
            error = await self._handle_one(record, message, first_error)
            if error is not None:
                letters.append(dead_letter(record, describe_error(error)))
        return letters

    async def _handle_one(
        self, record: Record, message: Message, first_error: Exception | None
    ) -> Exception | None:
        """Try one record `1 + handler_retries` times: None once it worked, else its last error."""
        token = logs.bind(message)
        try:
            return await self._retry_one(record, message, first_error)
        finally:
            logs.reset(token)

    async def _retry_one(
        self, record: Record, message: Message, first_error: Exception | None
    ) -> Exception | None:
        tries = 1 + self.settings.handler_retries
        # Uncapped: the number of retries bounds it.
        delay = RetryDelay(self.settings.handler_retry_backoff_ms / 1000, math.inf)
        error = first_error
        for attempt in range(1 if first_error is not None else 0, tries):
            if attempt > 0:
                await delay.wait(until=self._stopping)
                if self._stopping.is_set():
                    raise _Stopping
            try:
                await self.handle_batch([(record, message)])
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                error = exc
                log.warning(
                    "%r: %s[%d]@%d failed (try %d of %d): %s",
                    self,
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt + 1,
                    tries,
                    describe_error(exc),
                )
        assert error is not None
        return error

    async def _until_done(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        """Retry `action` with backoff until it succeeds; abandon (raise _Stopping) on stop()."""
        delay = RetryDelay(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        while True:
            try:
                await action()
                return
            except TransportError as exc:
                log.warning("%r: %s failed (%s); retrying in %.1fs", self, what, exc, delay.delay_s)
                await delay.wait(until=self._stopping)
                if self._stopping.is_set():
                    raise _Stopping from exc
