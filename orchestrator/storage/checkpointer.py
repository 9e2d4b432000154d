"""WAL checkpoints on a thread of their own, so their fsyncs never stall an event loop.

In WAL mode with `synchronous=NORMAL` a commit does not fsync; a checkpoint (copying the WAL back
into the database file) does, twice. SQLite runs one automatically inside whichever commit makes
the WAL pass `wal_autocheckpoint` pages — and Sagaway's commits run on the event loop's thread
(sqlite_inline.py), so every few hundred transactions one of them blocked the whole process for
the length of two fsyncs. Under load that was a quarter of `sagaway dev`'s throughput.

So every SQLite connection Sagaway opens raises the automatic threshold (`AUTOCHECKPOINT_PAGES`,
kept only as a bound should this thread stop), and `watch(path)` starts one daemon thread per
database file in the process that checkpoints it (PASSIVE: it never waits for or blocks a writer)
every `INTERVAL_S`, while some owner of that file is alive.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("sagaway.storage.checkpoint")

# The automatic checkpoint's threshold on connections the checkpointer watches (SQLite's default
# is 1,000 pages, ~4 MB). A bound on the WAL should the thread fall behind, not the normal path.
AUTOCHECKPOINT_PAGES = 20_000
INTERVAL_S = 0.5

_lock = threading.Lock()
_threads: dict[str, _Checkpointer] = {}


class _Checkpointer(threading.Thread):
    def __init__(self, path: Path) -> None:
        super().__init__(name=f"sagaway-checkpoint-{path.name}", daemon=True)
        self.path = path
        self.owners: weakref.WeakSet[Any] = weakref.WeakSet()
        self.stopped = threading.Event()
        self.checkpoints = 0

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self.stopped.wait(INTERVAL_S):
                with _lock:
                    if not self.owners:
                        _threads.pop(str(self.path), None)
                        return
                if conn is None:
                    conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=1.0)
                self._checkpoint(conn)
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, _wal_pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            if busy:
                log.debug("checkpoint of %s was blocked; the next one goes on", self.path)
        except sqlite3.Error as exc:  # a missing file or a lock: the next turn tries again
            log.debug("checkpoint of %s failed: %s", self.path, exc)


def watch(path: Path, owner: Any) -> None:
    """Checkpoint the SQLite database at `path` from a background thread for as long as `owner`
    (an engine, a broker file: anything weak-referenceable) is alive."""
    key = str(path.resolve())
    with _lock:
        thread = _threads.get(key)
        if thread is None or thread.stopped.is_set():
            thread = _threads[key] = _Checkpointer(Path(key))
            thread.owners.add(owner)
            thread.start()
        else:
            thread.owners.add(owner)


def checkpoints_of(path: Path) -> int | None:
    """How many checkpoints this process's thread has run on `path`; None if none watches it."""
    with _lock:
        thread = _threads.get(str(path.resolve()))
    return None if thread is None else thread.checkpoints


def stop_all() -> None:
    """Stop every checkpoint thread (tests; a process exiting needs nothing: they are daemons)."""
    with _lock:
        threads = list(_threads.values())
        _threads.clear()
    for thread in threads:
        thread.stopped.set()
    for thread in threads:
        thread.join(timeout=5)
