"""`RetryDelay`, the wait of every retry loop: doubles up to its ceiling, starts over once it
works."""

from __future__ import annotations

import asyncio
import math

from sagaway.observability.backoff import RetryDelay


async def test_the_delay_doubles_up_to_the_ceiling_and_a_reset_starts_over() -> None:
    backoff = RetryDelay(0.001, 0.004)
    waited = []
    for _ in range(4):
        waited.append(backoff.delay_s)
        await backoff.wait()
    assert waited == [0.001, 0.002, 0.004, 0.004]
    backoff.reset()
    assert backoff.delay_s == 0.001


async def test_the_nth_wait_sleeps_delay_for_n() -> None:
    backoff = RetryDelay(0.0001, 0.0009)
    for attempt in range(1, 8):
        assert backoff.delay_s == backoff.delay_for(attempt)
        await backoff.wait()


def test_delay_for_is_the_doubled_first_delay_under_the_ceiling() -> None:
    delay = RetryDelay(1, 5)
    assert [delay.delay_for(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    assert RetryDelay(10, 5).delay_for(1) == 5  # the ceiling caps the first delay too
    assert RetryDelay(10, 5).delay_s == 5
    assert RetryDelay(0.5, 30).delay_for(100_000) == 30  # a long outage does not overflow
    assert RetryDelay(0.1, math.inf).delay_for(4) == 0.1 * 8


async def test_jitter_draws_each_delay_between_half_and_all_of_it() -> None:
    backoff = RetryDelay(0.0004, 0.0016, jitter=True)
    for attempt in range(1, 6):
        nominal = backoff.delay_for(attempt)
        assert nominal / 2 <= backoff.delay_s <= nominal
        await backoff.wait()
    drawn = {RetryDelay(1, 2, jitter=True).delay_s for _ in range(20)}
    assert len(drawn) > 1


async def test_a_wait_ends_early_when_its_event_is_set() -> None:
    backoff = RetryDelay(30, 60)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, stop.set)
    started = loop.time()
    await asyncio.wait_for(backoff.wait(until=stop), 5)
    assert loop.time() - started < 5
    assert backoff.delay_s == 60  # and the next failure still waits longer
