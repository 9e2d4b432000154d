"""The in-process wake-up: a consumer with nothing to read waits on its process's bell for the
topics it reads, and a produce rings it at once.

Other processes on the same file ring it through their datagrams (`crossbell.py`). Polling every
`embedded_poll_interval_ms` remains as the safety net for a wake-up that is lost or cannot be had.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path


class Bell:
    """Wakes this process's waiting consumers of one broker file when a record is produced here
    on a topic they read (a produce to one topic does not wake the readers of all the others)."""

    def __init__(self) -> None:
        self._generations: dict[str, int] = defaultdict(int)
        self._waiters: dict[asyncio.Future[None], frozenset[str]] = {}
        self._lock = threading.Lock()

    def generation(self, topics: frozenset[str]) -> int:
        """A number that changes whenever a record is produced on one of `topics`."""
        with self._lock:
            return self._sum(topics)

    def _sum(self, topics: frozenset[str]) -> int:
        return sum(self._generations[t] for t in topics)

    def ring(self, topics: Iterable[str]) -> None:
        rung = set(topics)
        with self._lock:
            for topic in rung:
                self._generations[topic] += 1
            woken = [fut for fut, wanted in self._waiters.items() if not rung.isdisjoint(wanted)]
            for fut in woken:
                del self._waiters[fut]
        self._wake(woken)

    def ring_all(self) -> None:
        """Ring every topic: another process produced to topics it did not name."""
        with self._lock:
            # Every waiter's topics are keys here: `generation` added them before it waited.
            for topic in self._generations:
                self._generations[topic] += 1
            woken = list(self._waiters)
            self._waiters.clear()
        self._wake(woken)

    @staticmethod
    def _wake(woken: list[asyncio.Future[None]]) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:  # rung from a thread without an event loop
            here = None
        for fut in woken:
            loop = fut.get_loop()
            with contextlib.suppress(RuntimeError):  # that waiter's event loop is closed
                if loop is here:
                    # Its own loop: the thread-safe call would write the loop's self-pipe and
                    # wake it to read it back, one more system call each way per produce.
                    loop.call_soon(_resolve, fut)
                else:
                    loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, topics: frozenset[str], seen: int, timeout_s: float) -> None:
        """Return once `topics` rang after generation `seen`, or after `timeout_s`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._sum(topics) != seen:
                return
            self._waiters[fut] = topics
        try:
            await asyncio.wait([fut], timeout=timeout_s)
        finally:
            with self._lock:
                self._waiters.pop(fut, None)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_BELLS: weakref.WeakValueDictionary[str, Bell] = weakref.WeakValueDictionary()
_BELLS_LOCK = threading.Lock()


def bell_for(path: Path) -> Bell:
    """The bell of this broker file in this process, shared by every transport on it."""
    key = str(path.resolve())
    with _BELLS_LOCK:
        bell = _BELLS.get(key)
        if bell is None:
            bell = Bell()
            _BELLS[key] = bell
        return bell
