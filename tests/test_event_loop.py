"""Long-running processes run on uvloop when it is installed, unless told to use asyncio's."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from orchestrator import event_loop


async def loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(
    ("choice", "module"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_chosen_loop_runs_the_coroutine(choice: str, module: str) -> None:
    assert event_loop.run(loop_class(), choice).startswith(module)


def test_uvloop_is_the_factory_unless_asyncio_is_asked_for() -> None:
    assert event_loop.loop_factory("auto") is uvloop.new_event_loop
    assert event_loop.loop_factory("asyncio") is None
