"""One typed settings object, read once at start-up from SAGAWAY_* variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "SAGAWAY_CONFIG"


class Settings(BaseSettings):
    """Everything a Sagaway process can be told; every field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="SAGAWAY_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL of this service's database; unset → a SQLite file in data_dir.",
    )
    data_dir: Path = Field(
        default=Path(".sagaway"),
        description="Where embedded mode keeps its SQLite files (one per service, plus the broker).",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...); unset → the embedded broker in data_dir.",
    )
    topic_prefix: str = Field(default="", description="Prefix put before every topic name.")
    partitions: int = Field(default=8, ge=1, description="Partitions of each topic Sagaway creates.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of created topics.")
    session_timeout_ms: int = Field(
        default=10_000, ge=100, description="Consumer group session timeout."
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=10, description="Consumer group heartbeat interval."
    )
    fetch_max_wait_ms: int = Field(
        default=500, ge=1, description="Longest a fetch waits on the broker for new records."
    )
    producer_idempotence: bool = Field(
        default=True,
        description="Use Kafka's idempotent producer (turn off for brokers without InitProducerId).",
    )
    consumer_max_records: int = Field(
        default=500, ge=1, description="Most records a consumer takes in one batch."
    )
    handler_retries: int = Field(
        default=3, ge=0, description="Tries of a failing record before it goes to <topic>.dlq."
    )
    handler_retry_backoff_ms: int = Field(
        default=100, ge=0, description="First backoff between handler retries (doubles each try)."
    )
    embedded_poll_interval_ms: int = Field(
        default=50,
        ge=1,
        description="How often an embedded-broker consumer looks for records written by other processes.",
    )
    startup_retry_max_s: float = Field(
        default=30.0,
        ge=0.1,
        description="Longest backoff between tries to reach a database or broker that is down.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

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

    def database_url_for(self, service: str) -> str:
        """The database of `service`: the configured URL, or its own SQLite file in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    @property
    def embedded(self) -> bool:
        """True when no Kafka is configured and the in-process broker is used."""
        return not self.kafka_bootstrap


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; callers pass the object down instead of reading the environment."""
    return Settings(**overrides)
