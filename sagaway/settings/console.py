"""The operator console's settings (`sagaway console`, or /console under `sagaway dev`)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sagaway.settings.sources import ComponentSettings, split_list


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
    JSON object with the same fields, or one field at a time as SAGAWAY_CONSOLE__<FIELD>."""

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
            "Key that signs the session cookie (it carries a random session id; the session "
            "itself is a row in the console_sessions table); unset → a random key per process "
            "(sessions end when the console restarts, and several console instances do not "
            "share them)."
        ),
    )
    session_max_age_s: int = Field(
        default=8 * 3600,
        ge=60,
        description="How long a login lasts (its session's expiry and the cookie's lifetime).",
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
    relay_stale_after_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A relay heartbeat older than this is stale: the overview greys its lag and puts "
            'the service in its "needs attention" band (relays beat every '
            "relay_heartbeat_interval_s)."
        ),
    )
    consumer_lag_growth_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A consumer group whose lag only went up for this long (as the overview's refreshes "
            "saw it) is listed as needing attention: its consumer is not keeping up."
        ),
    )
    sync_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A sync request unanswered for longer than this is listed as needing attention "
            "(set it to the gateway's gateway_default_wait_s)."
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Addresses or CIDRs of reverse proxies whose X-Forwarded-For the console believes "
            "(the client address logins are throttled by); empty: the peer address is the client."
        ),
    )
    max_header_bytes: int = Field(
        default=16_384, ge=1024, description="Largest total size of a request's headers (431)."
    )
    max_headers: int = Field(
        default=100, ge=10, description="Most header fields a request may carry (431 above)."
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins for one user name before it is locked out for a while.",
    )
    login_address_max_failures: int = Field(
        default=20,
        ge=1,
        description="Failed logins from one client address before that address is locked out.",
    )
    login_failure_window_s: float = Field(
        default=900.0,
        gt=0,
        description="Failures older than this are forgotten (the count starts again).",
    )
    login_lockout_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "First lockout's length; each further lockout of the same user or address doubles it."
        ),
    )
    login_lockout_max_s: float = Field(
        default=3600.0, gt=0, description="Longest lockout (the doubling stops there)."
    )
    login_verify_concurrency: int = Field(
        default=2,
        ge=1,
        description="Password hashes checked at once, off the event loop; more logins queue.",
    )
    login_verify_queue: int = Field(
        default=16,
        ge=0,
        description="Logins that may wait for a hash check; more are refused (503) at once.",
    )
    operator_text_max_chars: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Longest free text an operator may enter (an abort reason, a filter).",
    )
    skip_result_max_bytes: int = Field(
        default=65536,
        ge=2,
        description="Largest JSON result an operator may give a skipped step.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an address or CIDR") from None
        return value


class ConsoleSource(ComponentSettings):
    """Reads the `[console]` TOML table, SAGAWAY_CONSOLE (a JSON object) or
    SAGAWAY_CONSOLE__<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="SAGAWAY_", env_nested_delimiter="__", extra="ignore"
    )

    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
