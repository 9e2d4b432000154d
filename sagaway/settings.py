"""One typed settings object, read once at start-up from SAGAWAY_* variables and an optional
TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "SAGAWAY_CONFIG"


class RouteConfig(BaseModel):
    """One line of the gateway's route table: `method path` starts saga `saga`."""

    method: str = "POST"
    path: str
    saga: str

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a route path must start with '/', got {value!r}")
        return value


class ApiKeyConfig(BaseModel):
    """An API key as configured: its hash, and optionally the saga types it may start."""

    hash: str
    sagas: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # `name = "sha256:..."` is the short form of `name = {hash = "sha256:..."}`.
        return {"hash": value} if isinstance(value, str) else value


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


class Settings(BaseSettings):
    """Everything a Sagaway process can be told; every field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="SAGAWAY_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy async URL of this service's database; unset → a SQLite file in data_dir."
        ),
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections each process keeps open to PostgreSQL; more callers wait for one.",
    )
    data_dir: Path = Field(
        default=Path(".sagaway"),
        description=(
            "Where embedded mode keeps its SQLite files (one per service, plus the broker)."
        ),
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description=(
            "Kafka bootstrap servers (host:port,...); unset → the embedded broker in data_dir."
        ),
    )
    topic_prefix: str = Field(default="", description="Prefix put before every topic name.")
    partitions: int = Field(
        default=8, ge=1, description="Partitions of each topic Sagaway creates."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of created topics."
    )
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
        description=(
            "Use Kafka's idempotent producer (turn off for brokers without InitProducerId)."
        ),
    )
    producer_batch_bytes: int = Field(
        default=262_144,
        ge=1024,
        description=(
            "Kafka producer: most bytes per partition batch "
            "(bigger batches, fewer acks to wait for)."
        ),
    )
    consumer_max_records: int = Field(
        default=500, ge=1, description="Most records a consumer takes in one batch."
    )
    handler_retries: int = Field(
        default=3,
        ge=0,
        description="Retries of a failing record, after its first try, before it goes to the DLQ.",
    )
    handler_retry_backoff_ms: int = Field(
        default=100, ge=0, description="First backoff between handler retries (doubles each try)."
    )
    embedded_poll_interval_ms: int = Field(
        default=50,
        ge=1,
        description=(
            "How often an embedded-broker consumer looks for new records when no wake-up came "
            "(another process's produce wakes it at once through broker.db.bells/)."
        ),
    )
    embedded_retention_s: float = Field(
        default=3600.0,
        ge=0,
        description="Embedded broker: least time consumed records are kept before pruning.",
    )
    embedded_prune_interval_s: float = Field(
        default=60.0,
        ge=0.1,
        description="Embedded broker: how often records every group has consumed are pruned.",
    )
    startup_retry_max_s: float = Field(
        default=30.0,
        ge=0.1,
        description="Longest backoff between tries to reach a database or broker that is down.",
    )
    relay_batch_size: int = Field(
        default=1000,
        ge=1,
        description="Outbox relay: most rows published to the broker in one batch.",
    )
    relay_poll_interval_ms: int = Field(
        default=20,
        ge=1,
        description=(
            "Polling relay: pause between looks at the outbox when it found nothing to publish."
        ),
    )
    relay_feedback_interval_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "WAL relay: how often it confirms its position to PostgreSQL while idle (keepalive)."
        ),
    )
    relay_prune_interval_s: float = Field(
        default=0.2,
        gt=0,
        description=(
            "WAL relay: most time published rows wait before they are deleted and confirmed."
        ),
    )
    relay_heartbeat_interval_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "How often the relay writes a heartbeat outbox row to measure commit → broker lag."
        ),
    )
    relay_retention_s: float = Field(
        default=3600.0,
        ge=0,
        description="Polling relay: published rows older than this are deleted (pruned).",
    )
    relay_standby_retry_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "WAL relay: how often a standby instance tries to take over the replication slot."
        ),
    )
    relay_slot_name: str | None = Field(
        default=None,
        description="WAL relay: replication slot and publication name; unset → sagaway_<service>.",
    )
    relay_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="`sagaway relay`: serve Prometheus metrics on this port (0 = off).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "`sagaway orchestrator` / `sagaway participant`: serve Prometheus metrics on this "
            "port, all interfaces (0 = off)."
        ),
    )
    timer_batch_size: int = Field(
        default=200,
        ge=1,
        description=(
            "Orchestrator: most due timers (step timeouts, retry backoffs) fired in one "
            "transaction."
        ),
    )
    timer_poll_interval_ms: int = Field(
        default=200,
        ge=1,
        description="Orchestrator: longest pause between looks for due timers.",
    )
    unknown_version_recheck_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Orchestrator: how long a due timer of a saga whose definition version is not "
            "loaded waits before it is looked at again (the saga is left untouched meanwhile)."
        ),
    )
    gateway_host: str = Field(
        default="127.0.0.1", description="`sagaway gateway`: address of the public HTTP listener."
    )
    gateway_port: int = Field(
        default=8000, ge=0, le=65535, description="`sagaway gateway`: port of the public listener."
    )
    gateway_internal_host: str = Field(
        default="127.0.0.1",
        description="Gateway: address of the internal listener (/metrics); keep it private.",
    )
    gateway_internal_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="Gateway: port of the internal listener serving /metrics (0 = not served).",
    )
    gateway_instance_id: str | None = Field(
        default=None,
        description="Gateway: this instance's name in the requests table (unset: host-pid).",
    )
    gateway_body_limit_bytes: int = Field(
        default=1_048_576, ge=1, description="Gateway: largest request body accepted (413 above)."
    )
    gateway_default_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Gateway: how long a sync request is held for its saga before a 202 answer.",
    )
    gateway_max_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="Gateway: the most a client may ask to be held with `Prefer: wait=N`.",
    )
    gateway_pending_poll_ms: int = Field(
        default=150,
        ge=10,
        description=(
            "Gateway: how often an instance looks in the requests table for results of the "
            "requests it holds that another instance stored."
        ),
    )
    gateway_direct_produce: bool | None = Field(
        default=None,
        description=(
            "Gateway: also publish each start command right after its commit (the relay's copy "
            "is deduplicated by the orchestrator); unset → only with a polling relay that runs "
            "outside the gateway (gateway_run_relay off)."
        ),
    )
    gateway_run_relay: bool = Field(
        default=True,
        description="Gateway: run the relay of the gateway database's outbox inside the gateway.",
    )
    gateway_relay_mode: str | None = Field(
        default=None,
        description="Gateway relay: `wal` or `poll` (unset: wal on PostgreSQL, poll on SQLite).",
    )
    routes: list[RouteConfig] = Field(
        default_factory=lambda: [
            RouteConfig(method="POST", path="/api/v1/orders", saga="place-order")
        ],
        description=(
            'Gateway route table (TOML `[[routes]] method="POST" path="/api/v1/orders" '
            'saga="place-order"`): extra paths that start a saga.'
        ),
    )
    api_keys: dict[str, ApiKeyConfig] = Field(
        default_factory=dict,
        description=(
            "Gateway API keys (TOML `[api_keys]`): name → hash (`sha256:<hex>` or an argon2 "
            "hash), or a table `{hash=..., sagas=[...]}`; the name becomes the principal."
        ),
    )
    bearer_secret: SecretStr | None = Field(
        default=None,
        description="Gateway: HMAC secret of accepted bearer tokens (HS256 JWT: `sub`, `exp`).",
    )
    rate_limit_per_s: float = Field(
        default=50.0,
        ge=0,
        description="Gateway: requests/s each API key (or client address) may make (0 = off).",
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Gateway: token-bucket size of the rate limit (burst)."
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        description="Gateway: HMAC-SHA256 secret signing callbacks (callbacks refused unless set).",
    )
    callback_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["*"],
        description=(
            "Gateway: callback hosts allowed (`host`, `*.domain`, `*`). Private, loopback and "
            "link-local addresses, and plain http, only for hosts listed by exact name or IP."
        ),
    )
    callback_max_attempts: int = Field(
        default=10, ge=1, description="Gateway: tries of a callback delivery before it is given up."
    )
    callback_backoff_s: float = Field(
        default=1.0, gt=0, description="Gateway: pause after a first failed callback (doubles)."
    )
    callback_backoff_max_s: float = Field(
        default=300.0, gt=0, description="Gateway: longest pause between callback tries."
    )
    callback_timeout_s: float = Field(
        default=10.0, gt=0, description="Gateway: time limit of one callback POST."
    )
    idempotency_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="Gateway: how long an Idempotency-Key keeps answering with its first request.",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings,
        description="The operator console: listen address, users and roles, sessions, sources.",
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description=(
            "Event loop of every long-running process; "
            "`uvloop` needs `pip install uvloop` (see docs/benchmarks.md)."
        ),
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Log lines as `text` (for a terminal, the default) or `json`: one object per line "
            "with time, level, logger, message and the correlation_id, saga_id and message_id "
            "being handled (recommended in production; see docs/observability.md)."
        ),
    )
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        default="none",
        description=(
            "OpenTelemetry traces: `none` (off, no overhead), `otlp` (OTLP over HTTP/protobuf to "
            "otel_endpoint) or `console` (spans printed to stdout, for a look while developing)."
        ),
    )
    otel_endpoint: str = Field(
        default="http://localhost:4318/v1/traces",
        description=(
            "Where the OTLP exporter POSTs spans (an OpenTelemetry Collector, Jaeger, Tempo...); "
            "the full URL including /v1/traces. Headers such as an auth token are read from the "
            "standard OTEL_EXPORTER_OTLP_TRACES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS variables."
        ),
    )
    otel_service_name: str | None = Field(
        default=None,
        description=(
            "The service.name of this process's spans; unset → `sagaway-<verb>` "
            "(sagaway-gateway, sagaway-orchestrator, sagaway-participant, sagaway-dev...)."
        ),
    )
    otel_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of new traces recorded (a trace begun upstream keeps its caller's sampling "
            "decision): lower it to bound tracing's cost at high request rates."
        ),
    )
    sagas: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["examples.place_order.saga"],
        description=(
            "Python modules (dotted names) whose saga definitions the orchestrator and gateway "
            "load; comma-separated or a JSON list. The default loads the example `place-order`."
        ),
    )

    inbox_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description=(
            "How long a consumer keeps a handled message id (and its reply) to answer "
            "redeliveries; keep it longer than the broker retains records and sagas re-send."
        ),
    )
    shipping_blocked_countries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["AQ"],
        description=(
            "Example `shipping` service: ISO 3166 alpha-2 codes of countries it does not ship to "
            "(rejected); comma-separated or a JSON list."
        ),
    )

    @field_validator("sagas", "shipping_blocked_countries", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        # The environment gives text: accept "a.b, c.d" as well as '["a.b", "c.d"]'.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

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
