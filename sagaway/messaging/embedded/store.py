"""The broker file: topics, records, group members and committed offsets in one SQLite database,
reached through one synchronous sqlite3 connection.

Several processes may share the file: WAL journal mode lets readers run beside the one writer,
and every write that must be atomic runs in a `BEGIN IMMEDIATE` transaction. Each method is one
short call the transport makes on the event loop's own thread (see `transport.py`).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from sagaway.messaging.embedded.headers import pack_headers, unpack_headers
from sagaway.messaging.embedded.membership import TopicPartition, assign
from sagaway.messaging.embedded.partitioner import default_partition
from sagaway.messaging.records import Record
from sagaway.messaging.transport import TransportError
from sagaway.sqlite import checkpointer

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
    -- Raised past every other row's by each append that moves this end, so a reader asks only
    -- for the ends that moved since its last look (BrokerFile._moved_ends).
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
-- A rowid table (its primary key an index beside it): a WITHOUT ROWID table keeps whole rows in
-- index pages, where a row past ~1 KB (a page's quarter) spills into an overflow page of its own,
-- and Sagaway's records are 0.8-1.2 KB. As a rowid table the file was less than half the size
-- and an append ~25 % cheaper (docs/benchmarks.md, "Round ten"). Files made before keep their
-- WITHOUT ROWID table: the statements are the same for both.
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
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
# After SCHEMA and the column added to files made before `partition_ends.seq` existed.
INDEXES = "CREATE INDEX IF NOT EXISTS partition_ends_by_seq ON partition_ends(seq)"


class UnknownTopic(TransportError):
    """A record was produced to a topic nobody created (topics are never created implicitly)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class BrokerFile:
    """The synchronous side: one sqlite3 connection, used only from the transport's thread."""

    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int = int(BUSY_TIMEOUT_S * 1000),
        counts_max_age_ms: int = 30_000,
    ) -> None:
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
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(partition_ends)")}
            if "seq" not in columns:  # a broker file from before the column
                self.conn.execute(
                    "ALTER TABLE partition_ends ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"
                )
            self.conn.execute(INDEXES)
        # Partition counts, read again every counts_max_age_ms: `sagaway topics grow` raises
        # them from another process, and members must start consuming the new partitions.
        self._partitions: dict[str, int] = {}
        self._counts_max_age_ms = counts_max_age_ms
        self._counts_read_ms = _now_ms()
        self._round_robin: dict[str, itertools.count[int]] = {}
        # Group assignments by the live member rows they were dealt from (_live_assignment).
        self._assignments: dict[tuple[Any, ...], dict[str, frozenset[TopicPartition]]] = {}
        # Every partition end this connection has seen, and the highest `seq` among them.
        self._ends: dict[TopicPartition, int] = {}
        self._ends_seq = -1

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
        """Partition counts of those topics that exist (cached; see reread_counts)."""
        self.reread_counts(force=False)
        wanted = set(topics)
        missing = [t for t in wanted if t not in self._partitions]
        if missing:
            marks = ",".join("?" * len(missing))
            for name, count in self.conn.execute(
                f"SELECT name, partitions FROM topics WHERE name IN ({marks})", missing
            ):
                self._partitions[name] = count
        return {t: self._partitions[t] for t in wanted if t in self._partitions}

    def reread_counts(self, *, force: bool) -> None:
        """Read the cached counts again when they are older than the limit (or `force`); a count
        that rose makes every cached group assignment be dealt again."""
        now = _now_ms()
        if not self._partitions or (
            not force and now - self._counts_read_ms < self._counts_max_age_ms
        ):
            return
        self._counts_read_ms = now
        names = list(self._partitions)
        marks = ",".join("?" * len(names))
        rose = False
        for name, count in self.conn.execute(
            f"SELECT name, partitions FROM topics WHERE name IN ({marks})", names
        ):
            if count > self._partitions[name]:
                self._partitions[name] = count
                rose = True
        if rose:
            self._assignments.clear()

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
                if record.partition >= count:  # grown since the counts were read?
                    self.reread_counts(force=True)
                    count = counts[record.topic] = self._partitions[record.topic]
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
                        pack_headers(record.headers),
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
                "INSERT INTO partition_ends(topic, partition, next_offset, seq)"
                " VALUES (?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM partition_ends))"
                " ON CONFLICT(topic, partition)"
                " DO UPDATE SET next_offset = excluded.next_offset, seq = excluded.seq",
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
        ends = self._moved_ends()
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
                        headers=unpack_headers(headers),
                        partition=partition,
                        offset=offset,
                        timestamp_ms=timestamp,
                    )
                )
        return out

    def _moved_ends(self) -> dict[TopicPartition, int]:
        """Every partition's next offset, brought up to date with one indexed query that returns
        only the ends moved since the last call (usually one row), so a fetch reads only the
        partitions that have something new. Writers hold the file's one write lock from their
        `seq` to their commit, so the ends commit in `seq` order and none is passed over."""
        moved = self.conn.execute(
            "SELECT topic, partition, next_offset, seq FROM partition_ends"
            " WHERE seq > ? ORDER BY seq",
            (self._ends_seq,),
        ).fetchall()
        if moved:
            ends = self._ends
            for topic, partition, end, _ in moved:
                ends[(topic, partition)] = end
            self._ends_seq = moved[-1][3]
        return self._ends

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
        self.reread_counts(force=False)  # a raised count clears the cached assignments
        assignment = self._assignments.get(members)
        if assignment is None:
            # Dealt once per membership (and partition counts), so a commit checks ownership
            # with one query.
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
