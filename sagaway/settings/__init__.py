"""Typed settings, one model per component (docs/architecture.md): each reads its own
`SAGAWAY_*` variables and keys of the TOML file named by SAGAWAY_CONFIG, and `Settings` composes
them in `sagaway.settings.composed.Settings` for the composition root, which hands each component
its own part."""

from sagaway.settings.console import ConsoleSettings, ConsoleUser
from sagaway.settings.gateway import ApiKeyConfig, GatewaySettings, RouteConfig
from sagaway.settings.platform import (
    MessagingSettings,
    ObservabilitySettings,
    RelaySettings,
    StorageSettings,
)
from sagaway.settings.roles import OrchestratorSettings, ParticipantSettings
from sagaway.settings.sources import CONFIG_FILE_VARIABLE

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "ApiKeyConfig",
    "ConsoleSettings",
    "ConsoleUser",
    "GatewaySettings",
    "MessagingSettings",
    "ObservabilitySettings",
    "OrchestratorSettings",
    "ParticipantSettings",
    "RelaySettings",
    "RouteConfig",
    "StorageSettings",
]
