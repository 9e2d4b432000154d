"""Start-up against dependencies that may be down: say which one, retry with backoff,
never crash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sagaway.observability.backoff import RetryDelay

T = TypeVar("T")
log = logging.getLogger("sagaway.startup")


async def retry_until_up(
    what: str,
    connect: Callable[[], Awaitable[T]],
    *,
    max_backoff_s: float = 30.0,
    first_backoff_s: float = 0.2,
    give_up_after_s: float | None = None,
) -> T:
    """Call `connect` until it succeeds, logging `what` is unavailable and backing off (with
    jitter) between tries. Raises the last error only if `give_up_after_s` runs out."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    delay = RetryDelay(first_backoff_s, max_backoff_s, jitter=True)
    attempt = 1
    while True:
        try:
            result = await connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "not up yet"
            elapsed = loop.time() - started
            if give_up_after_s is not None and elapsed >= give_up_after_s:
                raise
            log.warning(
                "%s is unavailable (%s: %s); try %d failed, retrying in %.1fs",
                what,
                type(exc).__name__,
                exc,
                attempt,
                delay.delay_s,
            )
            await delay.wait()
            attempt += 1
        else:
            if attempt > 1:
                log.info("%s is reachable after %d tries", what, attempt)
            return result
