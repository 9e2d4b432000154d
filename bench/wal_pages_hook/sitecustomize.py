"""Loaded by every Python process `bench/wal_pages.py` starts (this directory is put first on
their PYTHONPATH): turns off the WAL checkpoints of Sagaway's SQLite files, so that every page
a run writes stays in the `-wal` files for the bench to read after it kills the processes.

Does nothing unless SAGAWAY_BENCH_WAL_PAGES is set. Never use it outside the bench: without
checkpoints the WAL files grow without bound."""

from __future__ import annotations

import os

if os.environ.get("SAGAWAY_BENCH_WAL_PAGES"):
    from sagaway.sqlite import checkpointer

    # The checkpointer thread sleeps before its first turn: past any bench run.
    checkpointer.INTERVAL_S = 1e9
    checkpointer.IDLE_INTERVAL_S = 1e9
    # `PRAGMA wal_autocheckpoint = 0`: SQLite's own checkpoint at commit is off too.
    checkpointer.AUTOCHECKPOINT_PAGES = 0
