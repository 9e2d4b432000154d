"""The connections an inline SQLite engine keeps checked out between its transactions.

A small transaction through SQLAlchemy's pool paid as much for the pool as for SQLite: the
checkout and the return (events, a reset, a queue), and a new Connection object — a one-update
transaction took ~80 µs through the pool and ~40 µs on a connection kept for it
(docs/benchmarks.md, "Round eight"). Sagaway's loops (relays, consumers, the gateway's group
commit) run one transaction after another, so `InlineAsyncEngine.writing()` (under `begin()`)
and `.reading()` keep the connection of a transaction that ended cleanly for the next. An idle
pooled connection stays open just the same, so nothing else changes; what might carry state
back is given back instead: a failed transaction, a connection whose options changed, one more
than the keep holds.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.sqlite.options import READ_ONLY

# At most this many idle connections kept per engine, for write and for read-only transactions,
# and always fewer than the pool holds, so that `connect()` still finds one.
KEPT_WRITERS = 2
KEPT_READERS = 1
# The attribute of the sync Engine holding its keep: on the engine itself, collected with it (a
# weak mapping keyed by the engine would keep it alive through its own connections).
_ATTRIBUTE = "_sagaway_kept_connections"


class KeptConnections:
    """One engine's idle connections, for the transactions of one event loop's tasks."""

    def __init__(self, engine: Engine) -> None:
        size = getattr(engine.pool, "size", None)
        self.room = max(0, size() - 1) if callable(size) else 0
        self.options = engine.get_execution_options()
        self.writers: list[AsyncConnection] = []
        self.readers: list[AsyncConnection] = []

    def take(self, *, reader: bool) -> AsyncConnection | None:
        kept = self.readers if reader else self.writers
        return kept.pop() if kept else None

    def give_back(self, conn: AsyncConnection, *, reader: bool) -> bool:
        """Keep `conn` for the next transaction if it is clean and there is room; False: the
        caller closes it (back to the pool)."""
        kept, most = (self.readers, KEPT_READERS) if reader else (self.writers, KEPT_WRITERS)
        if len(kept) >= most or len(self.readers) + len(self.writers) >= self.room:
            return False
        sync = conn.sync_connection
        if sync is None or sync.closed or sync.invalidated or sync.in_transaction():
            return False
        options = dict(sync.get_execution_options())
        if options.pop(READ_ONLY, False) is not reader or options != dict(self.options):
            return False
        kept.append(conn)
        return True

    def drain(self) -> list[AsyncConnection]:
        """Every kept connection, no longer kept (the engine is being disposed of)."""
        every = self.writers + self.readers
        self.writers, self.readers = [], []
        return every


def kept_on(engine: Engine) -> KeptConnections:
    kept: KeptConnections | None = engine.__dict__.get(_ATTRIBUTE)
    if kept is None:
        kept = engine.__dict__[_ATTRIBUTE] = KeptConnections(engine)
    return kept
