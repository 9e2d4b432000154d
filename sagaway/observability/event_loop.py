"""Runs a process's main coroutine on the event loop the settings choose: asyncio's own (the
default), or uvloop. uvloop (libuv, in C) costs less CPU per callback, but it was no faster on
our hot paths and, with 10,000 sync requests held at one gateway, it reset connections that
asyncio accepted (docs/benchmarks.md) — so it is an option, not the default."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sagaway.observability.gc_tuning import tune_collector

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory for `uvloop`; None (asyncio's own loop) for `asyncio`."""
    if choice != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise RuntimeError(
            "SAGAWAY_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)"
        ) from None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """`asyncio.run(main)` on the chosen event loop, with the garbage collector set for a server
    (gc_tuning.py; `main` freezes its start-up heap once started)."""
    tune_collector()
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
