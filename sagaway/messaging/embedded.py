"""The embedded broker: Kafka's model (topics, partitions, consumer groups, committed offsets) kept
durably in one SQLite file, in process. It is a product mode (`sagaway dev`), not a test fake.

Several processes may share one broker file: WAL journal mode lets readers run beside the one
writer, a writer waits (asynchronously) for another's lock, and every write that must be atomic
runs in a `BEGIN IMMEDIATE` transaction. A restart loses nothing; only uncommitted records come
again.

Threading: every broker operation (a whole batch insert, a whole multi-partition fetch, a commit
with its ownership check) runs as one call on the event loop's own thread, on the transport's
sqlite3 connection: in WAL mode with synchronous=NORMAL they take microseconds, and handing them
to a worker thread cost more in thread switches than the SQL itself. Another process's write lock
is waited for asynchronously (busy timeout 0, `call_when_unlocked`), never with the loop blocked.
Only pruning, which may delete many rows, runs on a worker thread with a connection of its own.

Wake-ups: a consumer with nothing to read waits on its process's bell for the topics it reads.
A produce rings that bell at once in its own process and, through `crossbell.py`, in every other
process on the same file (one datagram to each one's socket in `broker.db.bells/`). Polling
every `embedded_poll_interval_ms` remains as the safety net for a wake-up that is lost or cannot
be had (a full socket queue, a socket path too long for AF_UNIX, a directory it cannot write).

Group membership without a coordinator: members upsert a heartbeat row; a member whose heartbeat is
older than `session_timeout_ms` is dead. Each live member computes the same assignment from the
sorted member list (round-robin per topic) and re-checks it every heartbeat; partitions it loses
are dropped, partitions it gains start from the group's committed offset. A commit re-checks
ownership inside its transaction and raises `CommitFailed` for a partition that moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import sqlite3
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sagaway.messaging import crossbell
from sagaway.messaging.records import Headers, Record
from sagaway.messaging.transport import CommitFailed, Subscription, Transport, TransportError
from sagaway.settings import Settings
from sagaway.sqlite import checkpointer
from sagaway.sqlite.inline import call_when_unlocked

try:  # the same hash as Kafka's default partitioner, so a key lands on the same partition
    from aiokafka.partitioner import murmur2
except ImportError:  # pragma: no cover - aiokafka is a dependency; kept for a Kafka-less install
    from kafka.partitioner.default import murmur2  # type: ignore[import-not-found,no-redef]

log = logging.getLogger("sagaway.embedded")
T = TypeVar("T")
TopicPartition = tuple[str, int]
# How long a broker call waits for another connection's write lock before it fails.
BUSY_TIMEOUT_S = 30.0
# Distinct group memberships whose assignment a broker connection remembers.
MAX_CACHED_ASSIGNMENTS = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS partition_ends (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS committed_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed INTEGER NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    topics TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
"""


class UnknownTopic(TransportError):
    """A record was produced to a topic nobody created (topics are never created implicitly)."""


def default_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records: murmur2(key), positive, modulo count."""
    return _murmur2_positive(key) % partitions


@functools.lru_cache(maxsize=65_536)
def _murmur2_positive(key: bytes) -> int:
    # Pure Python murmur2 is ~10 µs a key, and a saga's id keys each of its ~9 records.
    return int(murmur2(key)) & 0x7FFFFFFF


def assign(
    members: Sequence[tuple[str, Sequence[str]]], partitions: Mapping[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """Deterministic assignment every member computes alike: per topic, partitions dealt
    round-robin over the members subscribed to it, sorted by member id."""
    owned: dict[str, set[TopicPartition]] = {member: set() for member, _ in members}
    for topic, count in sorted(partitions.items()):
        subscribers = sorted(member for member, topics in members if topic in topics)
        if not subscribers:
            continue
        for partition in range(count):
            owned[subscribers[partition % len(subscribers)]].add((topic, partition))
    return {member: frozenset(tps) for member, tps in owned.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)


_last_member_ms = 0
_member_ms_lock = threading.Lock()


def _new_member_id() -> str:
    """Join time in ms, then a random tail. Members are assigned partitions in member-id order,
    so within a process a later member always sorts after an earlier one — even when both
    joined in the same millisecond, which became common once broker calls stopped hopping
    threads."""
    global _last_member_ms
    with _member_ms_lock:
        _last_member_ms = max(_now_ms(), _last_member_ms + 1)
        joined = _last_member_ms
    return f"{joined:013d}-{uuid.uuid4().hex[:12]}"


def _pack_headers(headers: Headers) -> bytes | None:
    if not headers:
        return None
    return orjson.dumps(
        [[name, None if value is None else bytes(value).hex()] for name, value in headers]
    )


def _unpack_headers(raw: bytes | None) -> Headers:
    if not raw:
        return ()
    return tuple(
        (name, bytes.fromhex(value) if value is not None else None)  # type: ignore[misc]
        for name, value in orjson.loads(raw)
    )


class BrokerFile:
    """The synchronous side: one sqlite3 connection, used only from the transport's thread."""

    def __init__(self, path: Path, busy_timeout_ms: int = int(BUSY_TIMEOUT_S * 1000)) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives any process crash (kill -9); only an OS crash or power loss
        # can lose the last transactions.
        self.conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints (and their fsyncs) run on a thread of their own, not inside an append.
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {checkpointer.AUTOCHECKPOINT_PAGES}")
        checkpointer.watch(path, self)
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
        self._partitions: dict[str, int] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        # Group assignments by the live member rows they were dealt from (_live_assignment).
        self._assignments: dict[tuple[Any, ...], dict[str, frozenset[TopicPartition]]] = {}

    @contextlib.contextmanager
    def transaction(self) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def ping(self) -> None:
        self.conn.execute("SELECT 1").fetchone()

    # -- topics -------------------------------------------------------------------------------

    def create_topics(self, partitions: Mapping[str, int]) -> None:
        with self.transaction() as conn:
            for name, count in partitions.items():
                if count < 1:
                    raise TransportError(
                        f"topic {name!r} needs at least one partition, got {count}"
                    )
                conn.execute(
                    "INSERT INTO topics(name, partitions) VALUES (?, ?)"
                    " ON CONFLICT(name) DO NOTHING",
                    (name, count),
                )
                conn.executemany(
                    "INSERT INTO partition_ends(topic, partition, next_offset) VALUES (?, ?, 0)"
                    " ON CONFLICT DO NOTHING",
                    [(name, p) for p in range(count)],
                )

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of those topics that exist (cached: counts never change)."""
        wanted = set(topics)
        missing = [t for t in wanted if t not in self._partitions]
        if missing:
            marks = ",".join("?" * len(missing))
            for name, count in self.conn.execute(
                f"SELECT name, partitions FROM topics WHERE name IN ({marks})", missing
            ):
                self._partitions[name] = count
        return {t: self._partitions[t] for t in wanted if t in self._partitions}

    def list_topics(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, partitions FROM topics").fetchall())

    # -- producing ----------------------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> list[Record]:
        """Store the batch in one transaction, assigning partitions and dense offsets."""
        counts = self.partition_counts(r.topic for r in records)
        unknown = sorted({r.topic for r in records} - counts.keys())
        if unknown:
            raise UnknownTopic(f"unknown topic(s) {', '.join(unknown)}: create them first")
        now = _now_ms()
        placed: list[tuple[Record, int]] = []
        for record in records:
            count = counts[record.topic]
            if record.partition >= 0:
                if record.partition >= count:
                    raise TransportError(
                        f"topic {record.topic!r} has {count} partitions, not {record.partition + 1}"
                    )
                partition = record.partition
            elif record.key is not None:
                partition = default_partition(record.key, count)
            else:
                counter = self._round_robin.setdefault(record.topic, itertools.count())
                partition = next(counter) % count
            placed.append((record, partition))
        stored: list[Record] = []
        rows: list[tuple[Any, ...]] = []
        with self.transaction() as conn:
            ends: dict[TopicPartition, int] = {}
            for record, partition in placed:
                tp = (record.topic, partition)
                if tp not in ends:
                    row = conn.execute(
                        "SELECT next_offset FROM partition_ends WHERE topic = ? AND partition = ?",
                        tp,
                    ).fetchone()
                    ends[tp] = row[0] if row else 0
                offset = ends[tp]
                ends[tp] = offset + 1
                timestamp = record.timestamp_ms or now
                rows.append(
                    (
                        record.topic,
                        partition,
                        offset,
                        record.key,
                        record.value,
                        _pack_headers(record.headers),
                        timestamp,
                    )
                )
                stored.append(
                    Record(
                        topic=record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=partition,
                        offset=offset,
                        timestamp_ms=timestamp,
                    )
                )
            conn.executemany(
                'INSERT INTO records(topic, partition, "offset", key, value, headers, timestamp_ms)'
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT INTO partition_ends(topic, partition, next_offset) VALUES (?, ?, ?)"
                " ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                [(t, p, n) for (t, p), n in ends.items()],
            )
        return stored

    # -- consuming ----------------------------------------------------------------------------

    def read(self, positions: Sequence[tuple[str, int, int]], max_records: int) -> list[Record]:
        """Up to `max_records` records from these (topic, partition, start offset) positions,
        taking partitions in the order given."""
        out: list[Record] = []
        if not positions:
            return out
        ends = self._ends({topic for topic, _, _ in positions})
        for topic, partition, start in positions:
            room = max_records - len(out)
            if room <= 0:
                break
            if ends.get((topic, partition), 0) <= start:
                continue  # nothing new there: skip the query
            for offset, key, value, headers, timestamp in self.conn.execute(
                'SELECT "offset", key, value, headers, timestamp_ms FROM records'
                ' WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                (topic, partition, start, room),
            ):
                out.append(
                    Record(
                        topic=topic,
                        value=bytes(value),
                        key=bytes(key) if key is not None else None,
                        headers=_unpack_headers(headers),
                        partition=partition,
                        offset=offset,
                        timestamp_ms=timestamp,
                    )
                )
        return out

    def _ends(self, topics: set[str]) -> dict[TopicPartition, int]:
        """The next offset of every partition of `topics` that has ever had a record: one query,
        so a fetch reads only the partitions that have something new."""
        marks = ",".join("?" * len(topics))
        return {
            (topic, partition): end
            for topic, partition, end in self.conn.execute(
                "SELECT topic, partition, next_offset FROM partition_ends"
                f" WHERE topic IN ({marks})",
                tuple(topics),
            )
        }

    def committed(self, group_id: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for topic, partition in tps:
            row = self.conn.execute(
                "SELECT committed FROM committed_offsets"
                " WHERE group_id = ? AND topic = ? AND partition = ?",
                (group_id, topic, partition),
            ).fetchone()
            if row is not None:
                out[(topic, partition)] = row[0]
        return out

    def _live_assignment(
        self, conn: sqlite3.Connection, group_id: str, session_timeout_ms: int, now: int
    ) -> dict[str, frozenset[TopicPartition]]:
        """The assignment among the members whose session has not expired."""
        members = tuple(
            conn.execute(
                "SELECT member_id, topics FROM group_members"
                " WHERE group_id = ? AND heartbeat_ms >= ? ORDER BY member_id",
                (group_id, now - session_timeout_ms),
            )
        )
        assignment = self._assignments.get(members)
        if assignment is None:
            # Computed once per membership: a commit checks ownership with one query, not the
            # five (and the deal in Python) it took. A topic's partition count never changes.
            parsed = [(member_id, tuple(orjson.loads(topics))) for member_id, topics in members]
            counts = self.partition_counts(t for _, topics in parsed for t in topics)
            assignment = assign(parsed, counts)
            if all(t in counts for _, topics in parsed for t in topics):  # else: not yet created
                if len(self._assignments) >= MAX_CACHED_ASSIGNMENTS:
                    self._assignments.clear()
                self._assignments[members] = assignment
        return assignment

    def heartbeat(
        self, group_id: str, member_id: str, topics: Sequence[str], session_timeout_ms: int
    ) -> frozenset[TopicPartition]:
        """Prove this member alive, forget dead ones, and return this member's assignment."""
        now = _now_ms()
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM group_members WHERE group_id = ? AND heartbeat_ms < ?",
                (group_id, now - session_timeout_ms),
            )
            conn.execute(
                "INSERT INTO group_members(group_id, member_id, topics, heartbeat_ms)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(group_id, member_id)"
                " DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, topics = excluded.topics",
                (group_id, member_id, orjson.dumps(sorted(topics)).decode(), now),
            )
            return self._live_assignment(conn, group_id, session_timeout_ms, now)[member_id]

    def leave(self, group_id: str, member_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM group_members WHERE group_id = ? AND member_id = ?",
                (group_id, member_id),
            )

    def commit(
        self,
        group_id: str,
        member_id: str,
        offsets: Mapping[TopicPartition, int],
        session_timeout_ms: int,
    ) -> list[TopicPartition]:
        """Store the offsets of the partitions this member still owns, and return the others
        (those moved to another member, which will read them again from its committed offset)."""
        now = _now_ms()
        with self.transaction() as conn:
            # A member whose session expired is not in the live assignment: it owns nothing.
            owned = self._live_assignment(conn, group_id, session_timeout_ms, now).get(
                member_id, frozenset()
            )
            foreign = sorted(tp for tp in offsets if tp not in owned)
            conn.executemany(
                "INSERT INTO committed_offsets"
                "(group_id, topic, partition, committed, committed_at_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(group_id, topic, partition)"
                " DO UPDATE SET committed = excluded.committed,"
                " committed_at_ms = excluded.committed_at_ms",
                [(group_id, t, p, o, now) for (t, p), o in offsets.items() if (t, p) in owned],
            )
            return foreign

    # -- retention ----------------------------------------------------------------------------

    def prune(self, retention_ms: int) -> int:
        """Delete records that every group committed past and that are older than the retention.
        Partitions no group committed on are kept (a dead-letter topic waits for an operator)."""
        cutoff = _now_ms() - retention_ms
        deleted = 0
        with self.transaction() as conn:
            floors = conn.execute(
                "SELECT topic, partition, MIN(committed) FROM committed_offsets"
                " GROUP BY topic, partition"
            ).fetchall()
            for topic, partition, floor in floors:
                cursor = conn.execute(
                    'DELETE FROM records WHERE topic = ? AND partition = ? AND "offset" < ?'
                    " AND timestamp_ms < ?",
                    (topic, partition, floor, cutoff),
                )
                deleted += cursor.rowcount
        return deleted


class _Bell:
    """Wakes this process's waiting consumers of one broker file when a record is produced here
    on a topic they read (a produce to one topic does not wake the readers of all the others).
    Other processes ring it through their datagrams (`crossbell.py`); polling finds what no bell
    announced."""

    def __init__(self) -> None:
        self._generations: dict[str, int] = defaultdict(int)
        self._waiters: dict[asyncio.Future[None], frozenset[str]] = {}
        self._lock = threading.Lock()

    def generation(self, topics: frozenset[str]) -> int:
        """A number that changes whenever a record is produced on one of `topics`."""
        with self._lock:
            return self._sum(topics)

    def _sum(self, topics: frozenset[str]) -> int:
        return sum(self._generations[t] for t in topics)

    def ring(self, topics: Iterable[str]) -> None:
        rung = set(topics)
        with self._lock:
            for topic in rung:
                self._generations[topic] += 1
            woken = [fut for fut, wanted in self._waiters.items() if not rung.isdisjoint(wanted)]
            for fut in woken:
                del self._waiters[fut]
        self._wake(woken)

    def ring_all(self) -> None:
        """Ring every topic: another process produced to topics it did not name."""
        with self._lock:
            # Every waiter's topics are keys here: `generation` added them before it waited.
            for topic in self._generations:
                self._generations[topic] += 1
            woken = list(self._waiters)
            self._waiters.clear()
        self._wake(woken)

    @staticmethod
    def _wake(woken: list[asyncio.Future[None]]) -> None:
        for fut in woken:
            with contextlib.suppress(RuntimeError):  # that waiter's event loop is closed
                fut.get_loop().call_soon_threadsafe(_resolve, fut)

    async def wait(self, topics: frozenset[str], seen: int, timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._sum(topics) != seen:
                return
            self._waiters[fut] = topics
        try:
            await asyncio.wait([fut], timeout=timeout_s)
        finally:
            with self._lock:
                self._waiters.pop(fut, None)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_BELLS: weakref.WeakValueDictionary[str, _Bell] = weakref.WeakValueDictionary()
_BELLS_LOCK = threading.Lock()


def _bell_for(path: Path) -> _Bell:
    key = str(path.resolve())
    with _BELLS_LOCK:
        bell = _BELLS.get(key)
        if bell is None:
            bell = _Bell()
            _BELLS[key] = bell
        return bell


class EmbeddedTransport(Transport):
    """The durable in-process broker; `EmbeddedTransport(settings)` uses data_dir/broker.db."""

    def __init__(
        self, path_or_settings: Settings | str | Path, settings: Settings | None = None
    ) -> None:
        if isinstance(path_or_settings, Settings):
            self.settings = path_or_settings
            self.path = Path(self.settings.data_dir) / "broker.db"
        else:
            self.settings = settings or Settings()
            self.path = Path(path_or_settings)
        self._executor: ThreadPoolExecutor | None = None
        self._file: BrokerFile | None = None
        self._pruner: BrokerFile | None = None
        self._bell = _bell_for(self.path)
        self._cross: crossbell.CrossProcessBell | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._subscriptions: weakref.WeakSet[EmbeddedSubscription] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"EmbeddedTransport({str(self.path)!r})"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a BrokerFile method here, waiting (asynchronously) for another writer's lock."""
        if self._file is None:
            raise TransportError(f"{self!r} is not started")
        try:
            result: T = await call_when_unlocked(lambda: fn(*args), BUSY_TIMEOUT_S)
            return result
        except sqlite3.Error as exc:
            raise TransportError(f"embedded broker {self.path}: {exc}") from exc

    @property
    def file(self) -> BrokerFile:
        if self._file is None:
            raise TransportError(f"{self!r} is not started")
        return self._file

    async def start(self) -> None:
        if self._file is not None:
            return
        try:
            self._file = await call_when_unlocked(
                lambda: BrokerFile(self.path, busy_timeout_ms=0), BUSY_TIMEOUT_S
            )
        except (sqlite3.Error, OSError) as exc:
            raise TransportError(f"cannot open embedded broker {self.path}: {exc}") from exc
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagaway-prune")
        self._prune_task = asyncio.create_task(
            self._prune_periodically(), name="embedded-broker-prune"
        )
        self._cross = crossbell.acquire(self.path, self._bell)

    async def close(self) -> None:
        if self._cross is not None:
            self._cross.release()
            self._cross = None
        for subscription in list(self._subscriptions):
            await subscription.close()
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
            self._prune_task = None
        if self._executor is not None:
            if self._pruner is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._pruner.close)
            self._executor.shutdown(wait=True)
        if self._file is not None:
            self._file.close()
        self._executor = None
        self._pruner = None
        self._file = None

    async def create_topics(self, partitions: Mapping[str, int]) -> None:
        await self.run(self.file.create_topics, dict(partitions))

    async def list_topics(self) -> dict[str, int]:
        return await self.run(self.file.list_topics)

    async def produce(self, records: Sequence[Record]) -> None:
        await self.append(records)

    async def append(self, records: Sequence[Record]) -> list[Record]:
        """Like produce, returning the records with their partition and offset."""
        if not records:
            return []
        stored = await self.run(self.file.append, list(records))
        topics = {record.topic for record in stored}
        self._bell.ring(topics)
        if self._cross is not None:
            self._cross.notify(topics)
        return stored

    def subscribe(self, group_id: str, topics: Sequence[str]) -> EmbeddedSubscription:
        subscription = EmbeddedSubscription(self, group_id, topics)
        self._subscriptions.add(subscription)
        return subscription

    async def ping(self) -> None:
        await self.run(self.file.ping)

    async def prune(self, retention_s: float | None = None) -> int:
        """Delete records every group has consumed that are older than the retention."""
        retention = self.settings.embedded_retention_s if retention_s is None else retention_s
        if self._executor is None:
            raise TransportError(f"{self!r} is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._prune_on_worker, int(retention * 1000)
            )
        except sqlite3.Error as exc:
            raise TransportError(f"embedded broker {self.path}: {exc}") from exc

    def _prune_on_worker(self, retention_ms: int) -> int:
        # A connection of the worker's own, with a blocking busy timeout: it may wait there.
        if self._pruner is None:
            self._pruner = BrokerFile(self.path)
        return self._pruner.prune(retention_ms)

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.embedded_prune_interval_s)
            try:
                deleted = await self.prune()
                if deleted:
                    log.debug("pruned %d consumed records from %s", deleted, self.path)
            except TransportError as exc:
                log.warning("pruning the embedded broker failed: %s", exc)


class EmbeddedSubscription(Subscription):
    """A consumer-group member on the embedded broker."""

    def __init__(self, transport: EmbeddedTransport, group_id: str, topics: Sequence[str]) -> None:
        self.transport = transport
        self.group_id = group_id
        self.topics = tuple(dict.fromkeys(topics))
        self._topic_set = frozenset(self.topics)
        self.member_id = _new_member_id()
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._rotation = 0
        self._rebalance_lock = asyncio.Lock()

    @property
    def _session_timeout_ms(self) -> int:
        return self.transport.settings.session_timeout_ms

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._rebalance()
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"embedded-heartbeat-{self.group_id}"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._started:
            with contextlib.suppress(TransportError):
                await self.transport.run(self.transport.file.leave, self.group_id, self.member_id)
        self._assignment = frozenset()
        self._positions.clear()

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assignment

    async def _heartbeat_loop(self) -> None:
        interval = self.transport.settings.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._rebalance()
            except TransportError as exc:
                log.warning(
                    "heartbeat of %s in group %s failed: %s", self.member_id, self.group_id, exc
                )

    async def _rebalance(self) -> None:
        async with self._rebalance_lock:
            new = await self.transport.run(
                self.transport.file.heartbeat,
                self.group_id,
                self.member_id,
                self.topics,
                self._session_timeout_ms,
            )
            if new == self._assignment:
                return
            gained = new - self._assignment
            committed = await self.transport.run(
                self.transport.file.committed, self.group_id, gained
            )
            for tp in self._assignment - new:
                self._positions.pop(tp, None)
            for tp in gained:
                self._positions[tp] = committed.get(tp, 0)
            log.info(
                "member %s of group %s now owns %d partition(s)",
                self.member_id,
                self.group_id,
                len(new),
            )
            self._assignment = new

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Record]:
        if not self._started or self._closed:
            raise TransportError("fetch on a subscription that is not started or is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        poll_s = self.transport.settings.embedded_poll_interval_ms / 1000
        bell = self.transport._bell
        while True:
            seen = bell.generation(self._topic_set)
            records = await self._read(max_records)
            if records or self._closed:
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await bell.wait(self._topic_set, seen, min(remaining, poll_s))

    async def _read(self, max_records: int) -> list[Record]:
        snapshot = sorted(self._positions.items())
        if not snapshot:
            return []
        # Rotate the starting partition so one busy partition cannot starve the others.
        self._rotation = (self._rotation + 1) % len(snapshot)
        snapshot = snapshot[self._rotation :] + snapshot[: self._rotation]
        records = await self.transport.run(
            self.transport.file.read, [(t, p, o) for (t, p), o in snapshot], max_records
        )
        starts = dict(snapshot)
        # Keep only partitions still owned at the position read from (a rebalance may have run).
        by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
        for record in records:
            by_tp[(record.topic, record.partition)].append(record)
        out: list[Record] = []
        for tp, batch in by_tp.items():
            if self._positions.get(tp) != starts[tp]:
                continue
            self._positions[tp] = batch[-1].offset + 1
            out.extend(batch)
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        if not records:
            return
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        foreign = await self.transport.run(
            self.transport.file.commit,
            self.group_id,
            self.member_id,
            offsets,
            self._session_timeout_ms,
        )
        if foreign:
            raise CommitFailed(
                f"member {self.member_id} of group {self.group_id} does not own "
                + ", ".join(f"{t}[{p}]" for t, p in foreign)
            )
