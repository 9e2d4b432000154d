"""The operator console's settings (`sagaway console`, or /console under `sagaway dev`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from sagaway.settings.sources import ComponentSettings


class ConsoleUser(BaseModel):
    """A console login: name, role and an argon2 (or bcrypt) hash of the password.

    Make a hash with `sagaway console --hash-password`."""

    name: str = Field(min_length=1, description="Login name.")
    role: Literal["viewer", "operator"] = Field(
        default="viewer", description="viewer reads every page; operator may also act."
    )
    password_hash: str = Field(
        min_length=1, description="argon2 ($argon2id$...) or bcrypt ($2b$...) hash of the password."
    )


class ConsoleSettings(BaseModel):
    """The operator console (`sagaway console`, or /console under `sagaway dev`).

    TOML: a `[console]` table and `[[console.users]]` entries; environment: SAGAWAY_CONSOLE as a
    JSON object with the same fields."""

    host: str = Field(default="127.0.0.1", description="Interface `sagaway console` listens on.")
    port: int = Field(
        default=8082, ge=0, le=65535, description="Port `sagaway console` listens on."
    )
    users: list[ConsoleUser] = Field(
        default_factory=list, description="Who may log in, with their role and password hash."
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key that signs session cookies; unset → a random key per process (sessions end "
            "when the console restarts, and several console instances do not share them)."
        ),
    )
    session_max_age_s: int = Field(
        default=8 * 3600, ge=60, description="How long a login lasts (session cookie lifetime)."
    )
    cookie_secure: bool = Field(
        default=True,
        description="Send the session cookie over HTTPS only (turn off only for plain-HTTP dev).",
    )
    refresh_interval_s: float = Field(
        default=3.0, gt=0, description="How often the overview refreshes itself in the browser."
    )
    page_size: int = Field(default=50, ge=1, le=500, description="Sagas per page of the list.")
    bulk_limit: int = Field(
        default=1000, ge=1, description="Most sagas one bulk retry or abort acts on."
    )
    gateway_database_url: str | None = Field(
        default=None,
        description=(
            "The gateway's database (its `requests` table: in-flight requests, pending sync "
            "requests); unset → database_url_for('gateway')."
        ),
    )
    services: list[str] = Field(
        default_factory=lambda: ["orchestrator", "gateway", "inventory", "payments", "shipping"],
        description=(
            "Services whose outbox lag the overview shows (and whose topics' DLQs it reads)."
        ),
    )
    service_database_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Database URL per service name, where not database_url_for(service).",
    )
    dead_letter_topics: list[str] = Field(
        default_factory=list,
        description=(
            "Source topics whose `<topic>.dlq` the console collects; empty → "
            "`<service>.requests` and `<service>.replies` of every service in `services`."
        ),
    )
    sample_interval_s: float = Field(
        default=10.0, gt=0, description="How often the console samples outbox lag for its chart."
    )


class ConsoleSource(ComponentSettings):
    """Reads the `[console]` TOML table, SAGAWAY_CONSOLE (a JSON object) or
    SAGAWAY_CONSOLE__<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="SAGAWAY_", env_nested_delimiter="__", extra="ignore"
    )

    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
