"""WAL checkpoints on a thread of their own, so their fsyncs never stall an event loop.

In WAL mode with `synchronous=NORMAL` a commit does not fsync; a checkpoint (copying the WAL back
into the database file) does, twice. SQLite runs one automatically inside whichever commit makes
the WAL pass `wal_autocheckpoint` pages — and Sagaway's commits run on the event loop's thread
(sqlite_inline.py), so every few hundred transactions one of them blocked the whole process for
the length of two fsyncs. Under load that was a quarter of `sagaway dev`'s throughput.

So every SQLite connection Sagaway opens raises the automatic threshold (`AUTOCHECKPOINT_PAGES`,
kept only as a bound should this thread stop), and `watch(path)` starts one daemon thread per
database file in the process that checkpoints it every `INTERVAL_S` while it is written to
(less and less often at rest, down to `IDLE_INTERVAL_S`), while some owner of that file is alive:

- PASSIVE, which never waits for or blocks a writer, copies what it can;
- but the WAL only starts over from its beginning after a checkpoint that copied every frame,
  and with writers appending meanwhile a passive one rarely does: the file grew to the automatic
  bound, and that checkpoint — all of it, inside a commit — stalled the loop for longer than all
  the small ones it replaced. So once the WAL holds more than `RESTART_FRAMES`, the thread runs a
  RESTART checkpoint: it holds off writers (they wait for the lock asynchronously) for the few
  frames left to copy, and the next write starts the WAL over.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("sagaway.storage.checkpoint")

# The automatic checkpoint's threshold on connections the checkpointer watches (SQLite's default
# is 1,000 pages, ~4 MB). A bound on the WAL should the thread fall behind, not the normal path.
AUTOCHECKPOINT_PAGES = 10_000
RESTART_FRAMES = 2_000
INTERVAL_S = 0.5
IDLE_INTERVAL_S = 4.0
# How long a RESTART checkpoint waits for readers and writers to let go before it gives up (and
# the next turn tries again); writers wait for it no longer than that.
RESTART_BUSY_TIMEOUT_S = 0.2

_lock = threading.Lock()
_threads: dict[str, _Checkpointer] = {}


class _Checkpointer(threading.Thread):
    """One database file's checkpoints, on a connection of its own; ends when no owner is left."""

    def __init__(self, path: Path) -> None:
        super().__init__(name=f"sagaway-checkpoint-{path.name}", daemon=True)
        self.path = path
        self.owners: weakref.WeakSet[Any] = weakref.WeakSet()
        self.checkpoints = 0
        self.restarts = 0
        self.wal = path.with_name(path.name + "-wal")
        self._wal_seen: tuple[int, int] | None = None

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        pause = INTERVAL_S
        try:
            while True:
                time.sleep(pause)
                with _lock:
                    if not self.owners:
                        _threads.pop(str(self.path), None)
                        return
                if self._wal_changed():
                    conn = self._checkpoint(conn)
                    pause = INTERVAL_S
                else:
                    # At rest the thread wakes ever less often; the first write brings it back
                    # within IDLE_INTERVAL_S, and the automatic checkpoint bounds the WAL till then.
                    pause = min(pause * 2, IDLE_INTERVAL_S)
        finally:
            if conn is not None:
                conn.close()

    def _wal_changed(self) -> bool:
        """Whether anything was written since the last turn: an idle database is not
        checkpointed again and again."""
        try:
            stat = os.stat(self.wal)
        except OSError:
            return True  # no WAL file yet, or unreadable: let the checkpoint find out
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._wal_seen:
            return False
        self._wal_seen = seen
        return True

    def _checkpoint(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """One turn; returns the connection to use next turn (None: open it again then)."""
        try:
            if conn is None:
                # mode=rw: never create the file (a database deleted under a running process
                # must not come back empty from here).
                conn = sqlite3.connect(
                    self.path.as_uri() + "?mode=rw",
                    uri=True,
                    isolation_level=None,
                    timeout=RESTART_BUSY_TIMEOUT_S,
                )
            _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > RESTART_FRAMES:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.restarts += 0 if busy else 1
            if copied < frames:
                self._wal_seen = None  # frames left behind (a reader's snapshot): next turn too
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a file gone or unreadable, a lock: the next turn tries again
            self._wal_seen = None
            log.debug("checkpoint of %s failed: %s", self.path, exc)
            if conn is not None:
                conn.close()
            return None
        return conn


def watch(path: Path, owner: Any) -> None:
    """Checkpoint the SQLite database at `path` from a background thread for as long as `owner`
    (an engine, a broker file: anything weak-referenceable) is alive."""
    key = str(path.resolve())
    with _lock:
        thread = _threads.get(key)
        if thread is None or not thread.is_alive():
            thread = _threads[key] = _Checkpointer(Path(key))
            thread.owners.add(owner)
            thread.start()
        else:
            thread.owners.add(owner)


def checkpoints_of(path: Path) -> tuple[int, int] | None:
    """How many checkpoints this process's thread has run on `path`, and how many of them
    restarted the WAL; None if no thread watches it."""
    with _lock:
        thread = _threads.get(str(path.resolve()))
    return None if thread is None else (thread.checkpoints, thread.restarts)
