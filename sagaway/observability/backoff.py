"""`RetryDelay`: how long a retry loop waits before trying a failing operation again.

Every loop that outlasts an outage (relays, the timer loop, the orchestrator's batches, the
consuming loop, start-up, a busy SQLite lock, the gateway's store and callbacks, the console's
collector) waits the same way: the delay doubles up to a ceiling, and goes back to the first delay
once the operation works.
"""

from __future__ import annotations

import asyncio
import contextlib
import random


class RetryDelay:
    """An exponential delay; `delay_s` is what the next `wait()` sleeps (for the log line). The
    n-th wait in a row sleeps `delay_for(n)`: `first_s` doubling, capped at `max_s` (the first
    delay too).

    With `jitter`, each delay is drawn between half and all of its nominal value, so processes
    that failed together do not all retry together."""

    __slots__ = ("first_s", "max_s", "jitter", "delay_s", "_nominal_s")

    def __init__(self, first_s: float, max_s: float, *, jitter: bool = False) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.jitter = jitter
        self._nominal_s = min(first_s, max_s)
        self.delay_s = self._drawn(self._nominal_s)

    def delay_for(self, attempt: int) -> float:
        """The nominal delay after the `attempt`-th failure in a row (1 for the first one):
        `first_s` doubled `attempt - 1` times, at most `max_s`; for a caller that keeps the count
        itself (such as a retry time stored with each delivery)."""
        delay = self.first_s
        for _ in range(attempt - 1):
            if delay >= self.max_s:
                break
            delay *= 2
        return min(delay, self.max_s)

    async def wait(self, *, until: asyncio.Event | None = None) -> None:
        """Sleep the current delay (less if `until` is set meanwhile), then double it (up to
        `max_s`) for the next failure."""
        if until is None:
            await asyncio.sleep(self.delay_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), self.delay_s)
        self._nominal_s = min(self._nominal_s * 2, self.max_s)
        self.delay_s = self._drawn(self._nominal_s)

    def reset(self) -> None:
        """The operation worked: the next failure waits `first_s` again."""
        self._nominal_s = min(self.first_s, self.max_s)
        self.delay_s = self._drawn(self._nominal_s)

    def _drawn(self, nominal_s: float) -> float:
        return nominal_s * (0.5 + random.random() / 2) if self.jitter else nominal_s
