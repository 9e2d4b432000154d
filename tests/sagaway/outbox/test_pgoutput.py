"""The pgoutput decoder on hand-built messages (the formats of PostgreSQL's protocol docs)."""

from __future__ import annotations

import struct

import pytest

from sagaway.outbox import pgoutput
from sagaway.outbox.wal_stream import parse_timestamp


def relation(rel_id: int, columns: list[str]) -> bytes:
    body = b"R" + struct.pack("!i", rel_id) + b"public\0outbox\0" + b"d"
    body += struct.pack("!h", len(columns))
    for name in columns:
        body += b"\0" + name.encode() + b"\0" + struct.pack("!ii", 25, -1)
    return body


def insert(rel_id: int, values: list[bytes | None]) -> bytes:
    body = b"I" + struct.pack("!i", rel_id) + b"N" + struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        else:
            body += b"t" + struct.pack("!i", len(value)) + value
    return body


def test_begin_insert_commit_decode() -> None:
    assert pgoutput.decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, 123, 77)) == pgoutput.Begin(
        0x1_0000_0010, 123, 77
    )
    rel = pgoutput.decode(relation(16384, ["id", "topic", "key"]))
    assert rel == pgoutput.Relation(16384, "public", "outbox", ("id", "topic", "key"))
    assert pgoutput.decode(insert(16384, [b"1", b"t", None])) == pgoutput.Insert(
        16384, (b"1", b"t", None)
    )
    commit = b"C" + b"\0" + struct.pack("!QQq", 100, 150, 999)
    assert pgoutput.decode(commit) == pgoutput.Commit(100, 150, 999)


def test_messages_the_relay_ignores_are_other() -> None:
    assert pgoutput.decode(b"Y\0\0\0\1") == pgoutput.Other("Y")


@pytest.mark.parametrize(
    "data",
    [b"", b"I\0\0", b"I" + struct.pack("!i", 1) + b"K", insert(1, [b"x"])[:-1], b"R\0\0\0\1abc"],
)
def test_malformed_messages_raise_pgoutput_error(data: bytes) -> None:
    with pytest.raises(pgoutput.PgOutputError):
        pgoutput.decode(data)


def test_postgres_timestamptz_text_parses() -> None:
    parsed = parse_timestamp(b"2026-11-26 15:20:00.123456+00")
    assert parsed is not None and parsed.utcoffset() is not None
    assert parsed.isoformat() == "2026-11-26T15:20:00.123456+00:00"
    assert parse_timestamp(b"2026-11-26 17:20:00+02").isoformat() == "2026-11-26T17:20:00+02:00"  # type: ignore[union-attr]
