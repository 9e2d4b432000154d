"""`RetryDelay`, the wait of every retry loop: doubles up to its ceiling, starts over once it works."""

from __future__ import annotations

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
