"""`Settings`: every component's settings, read once by the composition root, which hands each
component its own part (`settings.gateway` to the gateway, `settings.relay` to a relay...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.engine import make_url

from sagaway.settings.console import ConsoleSettings, ConsoleSource
from sagaway.settings.gateway import GatewaySettings
from sagaway.settings.platform import (
    MessagingSettings,
    ObservabilitySettings,
    RelaySettings,
    StorageSettings,
)
from sagaway.settings.roles import OrchestratorSettings, ParticipantSettings
from sagaway.settings.sources import ComponentSettings

# Component name → its model; the order is the README table's.
COMPONENTS: dict[str, type[ComponentSettings]] = {
    "storage": StorageSettings,
    "messaging": MessagingSettings,
    "relay": RelaySettings,
    "orchestrator": OrchestratorSettings,
    "participant": ParticipantSettings,
    "gateway": GatewaySettings,
    "observability": ObservabilitySettings,
}


class Settings(BaseModel):
    """The settings of every component. Build it from the environment and the TOML file with
    `Settings()`, or override any variable by its field name: `Settings(kafka_bootstrap="k:9092")`
    sets that field in every component that reads it."""

    model_config = ConfigDict(extra="forbid")

    storage: StorageSettings = Field(default_factory=StorageSettings)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    participant: ParticipantSettings = Field(default_factory=ParticipantSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="before")
    @classmethod
    def _components_from_fields(cls, data: Any) -> Any:
        """Flat field overrides go to every component that has the field; each component then
        reads what is left from the environment and the TOML file."""
        if not isinstance(data, dict):
            return data
        flat = {key: value for key, value in data.items() if key not in cls.model_fields}
        known = {name for model in COMPONENTS.values() for name in model.model_fields}
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"no component has a setting named {', '.join(unknown)}")
        built: dict[str, Any] = {}
        for name, model in COMPONENTS.items():
            given = data.get(name)
            if isinstance(given, model) and not flat:
                built[name] = given
                continue
            fields = dict(given.model_dump() if isinstance(given, BaseModel) else given or {})
            fields.update({k: v for k, v in flat.items() if k in model.model_fields})
            built[name] = model(**fields)
        console = data.get("console")
        if isinstance(console, ConsoleSettings):
            built["console"] = console
        else:
            built["console"] = ConsoleSource(**({"console": console} if console else {})).console
        return built

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        """A copy with whole components replaced; flat field names are refused (pydantic would
        set them as stray attributes and change nothing): use `replace` for those."""
        stray = sorted(set(update or ()) - set(type(self).model_fields))
        if stray:
            raise TypeError(
                f"Settings.model_copy: {', '.join(stray)} are fields of components; "
                "use Settings.replace(...)"
            )
        return super().model_copy(update=update, deep=deep)

    def replace(self, **fields: Any) -> Settings:
        """A copy with these fields (by their flat names) set in every component that has them."""
        parts: dict[str, Any] = {name: getattr(self, name) for name in COMPONENTS}
        parts["console"] = fields.pop("console", self.console)
        return Settings(**parts, **fields)

    def environment(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """The SAGAWAY_* variables that give another process these settings (only `names`, if
        given; unset values are left out)."""
        values: dict[str, Any] = {}
        for component in COMPONENTS:
            for name, value in getattr(self, component).model_dump().items():
                values.setdefault(name, _plain(value))
        values["console"] = _plain(self.console.model_dump())
        wanted = values if names is None else {name: values[name] for name in names}
        return {
            f"SAGAWAY_{name.upper()}": _variable_text(value)
            for name, value in wanted.items()
            if value is not None
        }

    def secret_values(self) -> list[str]:
        """Every secret these settings hold (database passwords, signing keys): what log lines
        must never show."""
        urls = [
            self.storage.database_url,
            self.console.gateway_database_url,
            *self.console.service_database_urls.values(),
        ]
        values = [_url_password(url) for url in urls]
        for secret in (
            self.gateway.bearer_secret,
            self.gateway.callback_secret,
            self.console.session_secret,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        return [value for value in values if value]


def _plain(value: Any) -> Any:
    """JSON-ready, with secrets revealed: the variables carry them to a process of our own."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _variable_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    return str(value)


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we can find
        return None


def load_settings(**fields: Any) -> Settings:
    """Read the settings once; callers pass each component its part instead of reading the
    environment."""
    return Settings(**fields)
