"""The broker file's reads: a reader asks only for the partition ends moved since its last look,
so what several connections append in any order is read once each, in offset order; and a file
made before the ends carried their `seq` is brought up to date when it is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sagaway.messaging.embedded.store import BrokerFile
from sagaway.messaging.records import Record

TOPICS = {"a": 3, "b": 2}

# One step: which writer appends how many records to which topic's partition.
appends = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from([(t, p) for t, n in TOPICS.items() for p in range(n)]),
        st.integers(1, 3),
    ),
    max_size=12,
)


def _positions(reader_at: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    return [(t, p, at) for (t, p), at in sorted(reader_at.items())]


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(appends, min_size=1, max_size=4))
def test_what_two_writers_append_is_read_once_each_in_offset_order(
    tmp_path_factory: object, steps: list[list[tuple[int, tuple[str, int], int]]]
) -> None:
    path = Path(tmp_path_factory.mktemp("broker")) / "broker.db"  # type: ignore[attr-defined]
    writers = [BrokerFile(path), BrokerFile(path)]
    reader = BrokerFile(path)
    try:
        writers[0].create_topics(TOPICS)
        at = {(t, p): 0 for t, n in TOPICS.items() for p in range(n)}
        sent: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in at}
        got: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in at}
        for step in steps:
            for writer, (topic, partition), count in step:
                values = [
                    f"{topic}{partition}-{len(sent[(topic, partition)]) + i}".encode()
                    for i in range(count)
                ]
                writers[writer].append(
                    [Record(topic=topic, value=v, partition=partition) for v in values]
                )
                sent[(topic, partition)].extend(values)
            # Read in small batches until a read finds nothing.
            while batch := reader.read(_positions(at), max_records=2):
                for record in batch:
                    tp = (record.topic, record.partition)
                    assert record.offset == at[tp]
                    got[tp].append(record.value)
                    at[tp] = record.offset + 1
        assert got == sent
    finally:
        for file in (*writers, reader):
            file.close()


def test_a_reader_sees_nothing_new_until_an_end_moves(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    writer, reader = BrokerFile(path), BrokerFile(path)
    try:
        writer.create_topics({"a": 2})
        writer.append([Record(topic="a", value=b"x", partition=1)])
        assert [r.value for r in reader.read([("a", 0, 0), ("a", 1, 0)], 10)] == [b"x"]
        assert reader.read([("a", 0, 0), ("a", 1, 1)], 10) == []
        writer.append([Record(topic="a", value=b"y", partition=0)])
        assert [r.value for r in reader.read([("a", 0, 0), ("a", 1, 1)], 10)] == [b"y"]
    finally:
        writer.close()
        reader.close()


def test_a_file_from_before_the_seq_column_is_upgraded_and_its_records_are_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
        CREATE TABLE partition_ends (
            topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
            PRIMARY KEY (topic, partition)
        ) WITHOUT ROWID;
        CREATE TABLE records (
            topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
            key BLOB, value BLOB NOT NULL, headers BLOB, timestamp_ms INTEGER NOT NULL,
            PRIMARY KEY (topic, partition, "offset")
        ) WITHOUT ROWID;
        INSERT INTO topics VALUES ('a', 1);
        INSERT INTO partition_ends VALUES ('a', 0, 1);
        INSERT INTO records VALUES ('a', 0, 0, NULL, x'6f6c64', NULL, 1);
        """
    )
    old.close()
    file = BrokerFile(path)
    try:
        assert [r.value for r in file.read([("a", 0, 0)], 10)] == [b"old"]
        file.append([Record(topic="a", value=b"new", partition=0)])
        assert [(r.offset, r.value) for r in file.read([("a", 0, 1)], 10)] == [(1, b"new")]
    finally:
        file.close()


def test_a_new_file_keeps_records_in_a_rowid_table(tmp_path: Path) -> None:
    """Records of ~1 KB in a WITHOUT ROWID table each spilled into an overflow page (store.py)."""
    file = BrokerFile(tmp_path / "broker.db")
    try:
        (sql,) = file.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'"
        ).fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        file.create_topics({"a": 1})
        big = [Record(topic="a", value=b"v" * 900, key=b"k" * 36, headers=(("h", b"x" * 300),))]
        file.append(big * 3)
        assert [r.offset for r in file.read([("a", 0, 0)], 10)] == [0, 1, 2]
    finally:
        file.close()
