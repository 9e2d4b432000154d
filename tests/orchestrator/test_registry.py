"""The saga registry: loading from SAGAWAY_SAGAS modules, versions side by side, typed errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.dsl import SagaDefinitionError, saga, step
from orchestrator.engine.decide import decide
from orchestrator.engine.events import Reply, Start
from orchestrator.engine.state import new_saga
from orchestrator.registry import (
    SagaModuleError,
    SagaRegistry,
    UnknownSagaType,
    UnknownSagaVersion,
    load_registry,
)
from sagaway.settings import OrchestratorSettings


def order_v1() -> object:
    return saga("order", version=1, steps=[
        step("reserve", "inventory.reserve", compensate="inventory.release"),
        step("ship", "shipping.schedule", pivot=True),
    ])


def order_v2() -> object:
    return saga("order", version=2, steps=[
        step("reserve", "inventory.reserve", compensate="inventory.release"),
        step("charge", "payments.charge", compensate="payments.refund"),
        step("ship", "shipping.schedule", pivot=True),
    ])


@pytest.fixture
def saga_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package `sagamods_<n>` on sys.path with a few saga modules."""
    package = f"sagamods_{abs(hash(tmp_path)) % 10**8}"
    root = tmp_path / package
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "orders.py").write_text(textwrap.dedent("""
        from orchestrator.dsl import saga, step
        order_v1 = saga("order", version=1,
                        steps=[step("ship", "shipping.schedule", pivot=True)])
        order_v2 = saga("order", version=2, steps=[step("ship", "shipping.schedule", pivot=True),
                                                   step("mail", "mail.send")])
        ALIAS = order_v2
    """))
    (root / "refunds.py").write_text(textwrap.dedent("""
        from orchestrator.dsl import saga, step
        refund = saga("refund", version=1, steps=[step("refund", "payments.refund", pivot=True)])
    """))
    (root / "empty.py").write_text("X = 1\n")
    (root / "broken.py").write_text(textwrap.dedent("""
        from orchestrator.dsl import saga, step
        bad = saga("bad", version=1, steps=[step("a", "nodot")])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]


def test_registry_loads_every_definition_of_the_configured_modules(
    saga_modules: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGAWAY_SAGAS", f"{saga_modules}.orders, {saga_modules}.refunds")
    registry = load_registry(OrchestratorSettings().sagas or [])
    assert registry.types() == ["order", "refund"]
    assert registry.versions("order") == [1, 2]
    assert registry.latest("order").version == 2
    assert registry.get("order", 1).step_names == ("ship",)
    assert len(registry) == 3 and "refund" in registry


def test_sagas_setting_accepts_a_json_list(saga_modules: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWAY_SAGAS", f'["{saga_modules}.refunds"]')
    assert OrchestratorSettings().sagas == [f"{saga_modules}.refunds"]
    assert load_registry(OrchestratorSettings().sagas or []).types() == ["refund"]


def test_empty_sagas_setting_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWAY_SAGAS", "")
    assert OrchestratorSettings().sagas == []
    assert len(load_registry(OrchestratorSettings().sagas or [])) == 0


def test_module_that_cannot_be_imported_is_a_typed_error() -> None:
    with pytest.raises(SagaModuleError, match="cannot import saga module 'no_such_mod_xyz'"):
        SagaRegistry.from_modules(["no_such_mod_xyz"])


def test_module_without_a_saga_is_a_typed_error(saga_modules: str) -> None:
    with pytest.raises(SagaModuleError, match="declares no saga"):
        SagaRegistry.from_modules([f"{saga_modules}.empty"])


def test_invalid_definition_in_a_module_surfaces_its_definition_error(saga_modules: str) -> None:
    with pytest.raises(SagaDefinitionError, match="saga 'bad', step 'a'"):
        SagaRegistry.from_modules([f"{saga_modules}.broken"])


def test_same_type_and_version_declared_twice_is_an_error() -> None:
    registry = SagaRegistry([order_v1()])  # type: ignore[list-item]
    with pytest.raises(SagaDefinitionError, match="version 1 is declared twice"):
        registry.register(order_v1())  # type: ignore[arg-type]


def test_unknown_type_and_version_raise_typed_errors() -> None:
    registry = SagaRegistry([order_v1()])  # type: ignore[list-item]
    with pytest.raises(UnknownSagaType) as unknown_type:
        registry.latest("refund")
    assert unknown_type.value.saga_type == "refund" and unknown_type.value.known == ["order"]
    with pytest.raises(UnknownSagaVersion) as unknown_version:
        registry.get("order", 7)
    assert unknown_version.value.version == 7 and unknown_version.value.loaded == [1]
    assert "version 7 is not loaded (loaded: 1)" in str(unknown_version.value)


def test_saga_started_on_v1_finishes_on_v1_after_v2_is_deployed() -> None:
    registry = SagaRegistry([order_v1()])  # type: ignore[list-item]
    definition = registry.latest("order")
    decision = decide(new_saga("s-1", definition, {}), Start(0.0), definition)
    state = decision.state
    registry.register(order_v2())  # type: ignore[arg-type]
    assert registry.latest("order").version == 2
    for _ in range(2):
        definition = registry.get(state.saga_type, state.version)
        (command,) = decision.commands
        decision = decide(
            state, Reply(command.step, command.message_id, command.attempt, "success", {}, 1.0),
            definition,
        )
        state = decision.state
    assert decision.final is not None and decision.final.status == "completed"
    assert state.version == 1
    assert "charge" not in state.steps  # v2's step never ran
