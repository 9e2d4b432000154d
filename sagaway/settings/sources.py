"""How every component's settings are read: `SAGAWAY_<FIELD>` variables first, then the TOML file
named by SAGAWAY_CONFIG (top-level keys are the field names), then the field's default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "SAGAWAY_CONFIG"


class ComponentSettings(BaseSettings):
    """Base of each component's settings model. Every component reads the same flat variables
    and TOML keys, so one variable (SAGAWAY_DATA_DIR, say) may feed several components."""

    model_config = SettingsConfigDict(env_prefix="SAGAWAY_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get(CONFIG_FILE_VARIABLE)
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def split_list(value: Any) -> Any:
    """The environment gives text: accept "a.b, c.d" as well as '["a.b", "c.d"]'."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value
