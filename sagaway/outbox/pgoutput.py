"""A decoder for the `pgoutput` logical replication protocol (version 1), with no I/O.

The WAL relay feeds it the raw bytes of each XLogData message and gets back events; only what the
outbox needs is modelled (Begin, Relation, Insert, Commit). Format: PostgreSQL docs,
"Logical Replication Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_INT64 = struct.Struct("!q")
_UINT64 = struct.Struct("!Q")
_INT32 = struct.Struct("!i")
_INT16 = struct.Struct("!h")


class PgOutputError(ValueError):
    """The bytes are not a pgoutput message this decoder understands."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time_us: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    """A new row; `values` are the columns' text representations (None for NULL)."""

    relation_id: int
    values: tuple[bytes | None, ...]


@dataclass(frozen=True, slots=True)
class Other:
    """A message the relay does not act on (Type, Origin, Update, Delete, Truncate, ...)."""

    kind: str


Event = Begin | Commit | Relation | Insert | Other


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _tuple_data(data: bytes, pos: int) -> tuple[tuple[bytes | None, ...], int]:
    (count,) = _INT16.unpack_from(data, pos)
    pos += 2
    values: list[bytes | None] = []
    for _ in range(count):
        kind = data[pos : pos + 1]
        pos += 1
        if kind == b"t" or kind == b"b":
            (length,) = _INT32.unpack_from(data, pos)
            pos += 4
            if length < 0 or pos + length > len(data):
                raise PgOutputError("tuple column runs past the end of the message")
            values.append(data[pos : pos + length])
            pos += length
        elif kind == b"n" or kind == b"u":
            values.append(None)
        else:
            raise PgOutputError(f"unknown tuple column kind {kind!r}")
    return tuple(values), pos


def decode(data: bytes) -> Event:
    """One pgoutput message → one event; raises PgOutputError on a malformed message."""
    if not data:
        raise PgOutputError("empty pgoutput message")
    kind = chr(data[0])
    try:
        if kind == "I":
            (relation_id,) = _INT32.unpack_from(data, 1)
            if data[5:6] != b"N":
                raise PgOutputError(f"insert without a new tuple: {data[5:6]!r}")
            values, _ = _tuple_data(data, 6)
            return Insert(relation_id & 0xFFFFFFFF, values)
        if kind == "B":
            final_lsn = _UINT64.unpack_from(data, 1)[0]
            commit_time = _INT64.unpack_from(data, 9)[0]
            xid = _INT32.unpack_from(data, 17)[0] & 0xFFFFFFFF
            return Begin(final_lsn, commit_time, xid)
        if kind == "C":
            commit_lsn = _UINT64.unpack_from(data, 2)[0]
            end_lsn = _UINT64.unpack_from(data, 10)[0]
            commit_time = _INT64.unpack_from(data, 18)[0]
            return Commit(commit_lsn, end_lsn, commit_time)
        if kind == "R":
            (relation_id,) = _INT32.unpack_from(data, 1)
            namespace, pos = _cstring(data, 5)
            name, pos = _cstring(data, pos)
            pos += 1  # replica identity setting
            (ncols,) = _INT16.unpack_from(data, pos)
            pos += 2
            columns: list[str] = []
            for _ in range(ncols):
                pos += 1  # flags (part of the key)
                column, pos = _cstring(data, pos)
                pos += 8  # type oid, type modifier
                columns.append(column)
            return Relation(relation_id & 0xFFFFFFFF, namespace, name, tuple(columns))
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, PgOutputError):
            raise
        raise PgOutputError(f"malformed pgoutput {kind!r} message: {exc}") from None
    return Other(kind)
