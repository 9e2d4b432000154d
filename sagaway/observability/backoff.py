"""`RetryDelay`: how long a retry loop waits before trying a failing operation again.

Every loop that outlasts an outage (relays, the timer loop, the orchestrator's batches, the
gateway's store, the console's collector) waits the same way: the delay doubles up to a ceiling,
and goes back to the first delay once the operation works.
"""

from __future__ import annotations

import asyncio


class RetryDelay:
    """An exponential delay; `delay_s` is what the next `wait()` sleeps (for the log line)."""

    __slots__ = ("first_s", "max_s", "delay_s")

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to `max_s`) for the next failure."""
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)

    def reset(self) -> None:
        """The operation worked: the next failure waits `first_s` again."""
        self.delay_s = self.first_s
