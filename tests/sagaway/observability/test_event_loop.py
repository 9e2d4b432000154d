"""Long-running processes run on asyncio's loop unless the settings ask for uvloop."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from sagaway.observability import event_loop
from sagaway.settings import ObservabilitySettings


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("choice", "module"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_the_chosen_loop_runs_the_coroutine(choice: str, module: str) -> None:
    assert event_loop.run(loop_module(), choice).startswith(module)


def test_asyncio_is_the_default() -> None:
    assert ObservabilitySettings().event_loop == "asyncio"
    assert event_loop.loop_factory(ObservabilitySettings().event_loop) is None
    assert event_loop.loop_factory("uvloop") is uvloop.new_event_loop
