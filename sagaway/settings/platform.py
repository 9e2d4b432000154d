"""The platform's components: storage, messaging, the outbox relays, observability."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sagaway.settings.shared import (
    DEFAULT_DATA_DIR,
    DEFAULT_PARTITIONS,
    DEFAULT_STARTUP_RETRY_MAX_S,
    DataDir,
    Partitions,
    StartupRetryMax,
    TopicPrefix,
)
from sagaway.settings.sources import ComponentSettings

# Written in SAGAWAY_DATABASE_URL, it stands for the service whose database is meant.
SERVICE_PLACEHOLDER = "{service}"


class StorageSettings(ComponentSettings):
    """Where each service's database is, and how to reach it."""

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy async URL of the database; `{service}` in it is replaced by the service "
            "name (`postgresql+asyncpg://u:p@db:5432/{service}`: a database per service), "
            "without it every service shares that one database; unset → a SQLite file per "
            "service in data_dir."
        ),
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections each process keeps open to PostgreSQL; more callers wait for one.",
    )
    data_dir: DataDir = DEFAULT_DATA_DIR
    startup_retry_max_s: StartupRetryMax = DEFAULT_STARTUP_RETRY_MAX_S

    def database_url_for(self, service: str) -> str:
        """The database of `service`: the configured URL with `{service}` replaced by its name
        (a URL without it names one database shared by every service), or its own SQLite file
        in data_dir."""
        if self.database_url:
            return self.database_url.replace(SERVICE_PLACEHOLDER, service)
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"


class MessagingSettings(ComponentSettings):
    """The broker (Kafka, or the embedded one in data_dir), its topics and its consumers."""

    kafka_bootstrap: str | None = Field(
        default=None,
        description=(
            "Kafka bootstrap servers (host:port,...); unset → the embedded broker in data_dir."
        ),
    )
    topic_prefix: TopicPrefix = ""
    partitions: Partitions = DEFAULT_PARTITIONS
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of created topics."
    )
    service_partitions: dict[str, int] = Field(
        default_factory=dict,
        description=(
            'Partitions of a service\'s request and reply topics, per service (`{"payments": '
            "16}`); a service not named takes `partitions` (see docs/scaling.md)."
        ),
    )
    service_replication: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Replication factor of a service's topics, per service; a service not named takes "
            "`replication_factor`."
        ),
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=100, description="Consumer group session timeout."
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, ge=10, description="Consumer group heartbeat interval."
    )
    rebalance_timeout_ms: int | None = Field(
        default=None,
        ge=100,
        description=(
            "Kafka: how long a rebalance waits for the live members to join again; unset → "
            "the session timeout."
        ),
    )
    fetch_max_wait_ms: int = Field(
        default=500, ge=1, description="Longest a fetch waits on the broker for new records."
    )
    metadata_max_age_ms: int = Field(
        default=30_000,
        ge=100,
        description=(
            "How often partition counts are read again: consumers take up a grown topic's new "
            "partitions within this time of `sagaway topics grow`, and the orchestrator gives "
            "new sagas the new count one read later (docs/scaling.md)."
        ),
    )
    producer_idempotence: bool | Literal["auto"] = Field(
        default="auto",
        description=(
            "Kafka's idempotent producer: `auto` uses it when the broker gives producer ids "
            "(InitProducerId), else the plain producer with one warning; `true` requires it "
            "(a broker without it stops the process); `false` never asks. Without it a retried "
            "send may write a record twice, and the consumers' inboxes drop the copy."
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
        default=500,
        ge=1,
        description=(
            "Most records a consumer takes in one batch (`sagaway dev`: 32 unless set, so its "
            "two processes work side by side)."
        ),
    )
    consumer_commit_interval_ms: int = Field(
        default=1000,
        ge=0,
        description=(
            "Longest a consumer holds the offsets of handled records before committing them "
            "(it also commits when idle and on a clean stop); 0 commits after every batch. "
            "Consumers deduplicate, so a crash redelivers at most this much and loses nothing."
        ),
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
        default=2000,
        ge=1,
        description=(
            "How often an embedded-broker consumer looks for new records when no wake-up came: "
            "a safety net, since a produce wakes it at once (from another process through "
            "broker.db.bells/)."
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
    data_dir: DataDir = DEFAULT_DATA_DIR
    startup_retry_max_s: StartupRetryMax = DEFAULT_STARTUP_RETRY_MAX_S

    @property
    def embedded(self) -> bool:
        """True when no Kafka is configured and the in-process broker is used."""
        return not self.kafka_bootstrap


class RelaySettings(ComponentSettings):
    """The outbox relays: the WAL relay on PostgreSQL, the polling relay on SQLite."""

    relay_batch_size: int = Field(
        default=1000,
        ge=1,
        description="Outbox relay: most rows published to the broker in one batch.",
    )
    relay_poll_interval_ms: int = Field(
        default=20,
        ge=1,
        description=(
            "Polling relay in a process of its own (`sagaway relay --mode poll`): pause between "
            "looks at the outbox when it found nothing to publish."
        ),
    )
    relay_idle_poll_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "Polling relay in its writers' process (gateway, participant, `sagaway dev`): a "
            "commit that wrote outbox rows wakes it at once; this is the safety-net look."
        ),
    )
    relay_mark_interval_s: float = Field(
        default=0.2,
        ge=0,
        description=(
            "Polling relay on SQLite: most time acknowledged rows wait before they are marked "
            "published, all in one transaction (0: one per batch). A crash in between publishes "
            "them again, and consumers deduplicate them."
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
    startup_retry_max_s: StartupRetryMax = DEFAULT_STARTUP_RETRY_MAX_S


class ObservabilitySettings(ComponentSettings):
    """Logs, traces and metrics of a process, and the event loop it runs on."""

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
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "`sagaway orchestrator` / `sagaway participant`: serve Prometheus metrics on this "
            "port, all interfaces (0 = off)."
        ),
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description=(
            "Event loop of every long-running process; "
            "`uvloop` needs `pip install uvloop` (see docs/benchmarks.md)."
        ),
    )
