"""A saga module's old path keeps loading it for one release, with a warning naming the new one."""

from __future__ import annotations

import logging

import pytest

from examples.place_order.saga import place_order
from orchestrator.registry import load_registry
from sagaway.cli.moved_saga_modules import current_saga_modules
from sagaway.settings import Settings


def test_the_old_example_path_loads_the_place_order_saga_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(sagas=["participants.examples.place_order"])
    with (
        caplog.at_level(logging.WARNING, logger="sagaway.cli"),
        pytest.warns(DeprecationWarning, match="'examples.place_order.saga'"),
    ):
        registry = load_registry(current_saga_modules(settings))
    assert registry.types() == ["place-order"]
    assert registry.latest("place-order") is place_order
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "set SAGAWAY_SAGAS=examples.place_order.saga" in record.getMessage()


def test_current_paths_are_left_alone_without_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    settings = Settings(sagas=["examples.place_order.saga"])
    assert current_saga_modules(settings) is settings
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]

