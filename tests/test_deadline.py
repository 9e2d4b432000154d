"""The deadline on async tests (tests/fixtures/deadline.py): a hung test fails, the run goes on."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from tests.fixtures.deadline import ASYNC_TEST_DEADLINE_S, with_deadline


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
    assert inspect.unwrap(request.node.obj) is not request.node.obj
    assert ASYNC_TEST_DEADLINE_S < float(request.config.getini("timeout"))
