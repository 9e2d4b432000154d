"""A saga module's old path keeps loading it for one release, with a warning naming the new one;
unset SAGAWAY_SAGAS runs the example application."""

from __future__ import annotations

import logging

import pytest

from examples.place_order.saga import place_order
from orchestrator.registry import load_registry
from sagaway.cli.application import application
from sagaway.cli.moved_saga_modules import current_saga_modules
from sagaway.settings import RouteConfig
from sagaway.settings.composed import load_settings


def test_the_old_example_path_loads_the_place_order_saga_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="sagaway.cli"),
        pytest.warns(DeprecationWarning, match="'examples.place_order.saga'"),
    ):
        registry = load_registry(current_saga_modules(["participants.examples.place_order"]))
    assert registry.types() == ["place-order"]
    assert registry.latest("place-order") is place_order
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "set SAGAWAY_SAGAS=examples.place_order.saga" in record.getMessage()


def test_current_paths_are_left_alone_without_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    assert current_saga_modules(["examples.place_order.saga"]) == ["examples.place_order.saga"]
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_unset_sagas_run_the_example_with_its_route_and_set_ones_run_alone() -> None:
    example = application(load_settings(sagas=None, routes=[]))
    assert example.orchestrator.sagas == ["examples.place_order.saga"]
    assert example.gateway.routes == [
        RouteConfig(method="POST", path="/api/v1/orders", saga="place-order")
    ]

    own = application(load_settings(sagas="shop.sagas", routes=[]))
    assert own.orchestrator.sagas == ["shop.sagas"]
    assert own.gateway.routes == []

    with pytest.warns(DeprecationWarning):
        moved = application(load_settings(sagas="participants.examples.place_order"))
    assert moved.orchestrator.sagas == ["examples.place_order.saga"]
