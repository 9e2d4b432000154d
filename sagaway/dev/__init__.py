"""`sagaway dev`: the whole system on one machine, on SQLite files and the embedded broker."""

from __future__ import annotations


class DevError(RuntimeError):
    """`sagaway dev` cannot start as asked (port taken, data dir in use, unsafe reset)."""
