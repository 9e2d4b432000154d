"""The saga definitions a process knows: (saga type, version) → definition, loaded from modules.

Several versions of one saga type live side by side, so a saga started on version N finishes on
version N after N+1 is deployed; new sagas start on the latest version.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence

from orchestrator.dsl import SagaDefinition, SagaDefinitionError


class UnknownSagaType(LookupError):
    """No saga of this type is loaded (the gateway answers 404)."""

    def __init__(self, saga_type: str, known: Iterable[str]) -> None:
        self.saga_type = saga_type
        self.known = sorted(known)
        super().__init__(
            f"no saga type {saga_type!r} is loaded (known: {', '.join(self.known) or 'none'}); "
            "add its module to SAGAWAY_SAGAS"
        )


class UnknownSagaVersion(LookupError):
    """The saga type is loaded, but not this version: a saga in flight on it is left alone."""

    def __init__(self, saga_type: str, version: int, loaded: Iterable[int]) -> None:
        self.saga_type = saga_type
        self.version = version
        self.loaded = sorted(loaded)
        super().__init__(
            f"saga type {saga_type!r} version {version} is not loaded (loaded: "
            f"{', '.join(map(str, self.loaded))}); keep the old definition deployed until "
            "its sagas have finished"
        )


class SagaModuleError(ImportError):
    """A module named in SAGAWAY_SAGAS cannot be imported or declares no saga."""


class SagaRegistry:
    """Saga definitions by type and version."""

    def __init__(self, definitions: Iterable[SagaDefinition] = ()) -> None:
        self._definitions: dict[str, dict[int, SagaDefinition]] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: SagaDefinition) -> None:
        """Add a definition; a second, different one for the same type and version is an error."""
        if not isinstance(definition, SagaDefinition):
            raise TypeError(f"not a saga definition: {definition!r}")
        versions = self._definitions.setdefault(definition.saga_type, {})
        existing = versions.get(definition.version)
        if existing is not None and existing is not definition:
            raise SagaDefinitionError(
                definition.saga_type, None,
                f"version {definition.version} is declared twice",
                "give the new declaration a higher version (or remove the duplicate)",
            )
        versions[definition.version] = definition

    def get(self, saga_type: str, version: int) -> SagaDefinition:
        """The definition a saga started on; raises UnknownSagaType or UnknownSagaVersion."""
        versions = self._definitions.get(saga_type)
        if not versions:
            raise UnknownSagaType(saga_type, self._definitions)
        definition = versions.get(version)
        if definition is None:
            raise UnknownSagaVersion(saga_type, version, versions)
        return definition

    def latest(self, saga_type: str) -> SagaDefinition:
        """The definition new sagas of this type start on (the highest version)."""
        versions = self._definitions.get(saga_type)
        if not versions:
            raise UnknownSagaType(saga_type, self._definitions)
        return versions[max(versions)]

    def types(self) -> list[str]:
        return sorted(self._definitions)

    def versions(self, saga_type: str) -> list[int]:
        if saga_type not in self._definitions:
            raise UnknownSagaType(saga_type, self._definitions)
        return sorted(self._definitions[saga_type])

    def __contains__(self, saga_type: object) -> bool:
        return saga_type in self._definitions

    def __iter__(self) -> Iterator[SagaDefinition]:
        for saga_type in sorted(self._definitions):
            versions = self._definitions[saga_type]
            for version in sorted(versions):
                yield versions[version]

    def __len__(self) -> int:
        return sum(len(v) for v in self._definitions.values())

    @classmethod
    def from_modules(cls, module_names: Iterable[str]) -> SagaRegistry:
        """Import each module and register every SagaDefinition at its top level."""
        registry = cls()
        for module_name in module_names:
            try:
                module = importlib.import_module(module_name)
            except SagaDefinitionError:
                raise
            except Exception as exc:
                raise SagaModuleError(
                    f"cannot import saga module {module_name!r} (from SAGAWAY_SAGAS): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            found = [v for v in vars(module).values() if isinstance(v, SagaDefinition)]
            if not found:
                raise SagaModuleError(
                    f"saga module {module_name!r} (from SAGAWAY_SAGAS) declares no saga; "
                    "assign the result of saga(...) to a module-level name"
                )
            for definition in found:
                registry.register(definition)
        return registry


def load_registry(modules: Sequence[str]) -> SagaRegistry:
    """The registry of these saga modules (dotted names, as SAGAWAY_SAGAS lists them)."""
    return SagaRegistry.from_modules(modules)
