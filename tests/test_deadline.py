"""The deadline on async tests (tests/fixtures/deadline.py): a hung test fails, the run goes on."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from tests.fixtures.deadline import (
    ASYNC_TEST_DEADLINE_S,
    HARD_LIMIT_GRACE_S,
    marker_seconds,
    with_deadline,
)


async def test_a_hung_test_fails_with_timeout_error_at_its_deadline() -> None:
    async def hung(value: int) -> None:
        await asyncio.Event().wait()  # nothing ever sets it

    loop = asyncio.get_running_loop()
    spinning = True

    def spin() -> None:  # keeps the loop running callbacks, where an alarm's exception is lost
        if spinning:
            loop.call_soon(spin)

    loop.call_soon(spin)
    try:
        with pytest.raises(TimeoutError):
            await with_deadline(hung, 0.2)(value=1)
    finally:
        spinning = False
    assert list(inspect.signature(with_deadline(hung, 1)).parameters) == ["value"]


async def test_every_async_test_of_the_suite_runs_under_the_deadline(
    request: pytest.FixtureRequest,
) -> None:
    deadline = request.node.obj.deadline_s
    assert deadline == ASYNC_TEST_DEADLINE_S
    hard_limit = marker_seconds(request.node.get_closest_marker("timeout"))
    assert hard_limit is not None and hard_limit > deadline


@pytest.mark.timeout(45)
async def test_a_timeout_marker_is_the_deadline_and_the_hard_limit_comes_later(
    request: pytest.FixtureRequest,
) -> None:
    assert request.node.obj.deadline_s == 45
    assert marker_seconds(request.node.get_closest_marker("timeout")) == 45 + HARD_LIMIT_GRACE_S
