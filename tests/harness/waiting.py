"""Waiting in tests: poll a condition until it holds, or fail naming what never came."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

What = str | Callable[[], str]

SHOWN_CHARS = 3000  # of the last value seen, in the failure message


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float,
    what: What,
    interval_s: float = 0.05,
) -> T:
    """Call `condition` (sync or async) until it returns something truthy, and return that.
    After `timeout_s`, AssertionError naming `what` (text, or a function giving it then) and
    the last value seen. An exception from `condition` ends the wait at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(_timed_out(what, timeout_s, value))
        await asyncio.sleep(interval_s)


def eventually_sync(
    condition: Callable[[], T],
    *,
    timeout_s: float,
    what: What,
    interval_s: float = 0.1,
) -> T:
    """`eventually` for code without an event loop (threads, subprocess drivers, browsers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, timeout_s, value))
        time.sleep(interval_s)


@contextlib.asynccontextmanager
async def seen_each_turn(read: Callable[[], T]) -> AsyncIterator[list[T]]:
    """A task beside the code under test that records `read()` at every turn of the event loop
    it gets: what it saw shows whether that code let the loop run between its steps."""
    seen: list[T] = []

    async def watch() -> None:
        while True:
            seen.append(read())
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _timed_out(what: What, timeout_s: float, last: object) -> str:
    message = f"timed out after {timeout_s:g}s waiting for {what() if callable(what) else what}"
    if last is None or last is False:  # a plain "not yet": nothing more to show
        return message
    shown = repr(last)
    if len(shown) > SHOWN_CHARS:
        shown = "…" + shown[-SHOWN_CHARS:]
    return f"{message}; last seen: {shown}"
