"""The gateway's settings: listeners, routes, authentication, limits and callbacks."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from sagaway.settings.sources import ComponentSettings, split_list


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


class GatewaySettings(ComponentSettings):
    """The HTTP gateway (`sagaway gateway`, or the API under `sagaway dev`)."""

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
        description=(
            "Gateway: port of the internal listener serving /metrics (0 = not served); "
            "`sagaway dev` takes the port after its own unless this is set to another value."
        ),
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
    auth_failure_burst: int = Field(
        default=10,
        ge=0,
        description=(
            "Gateway: failed authentications a client address may make in a row before it is "
            "answered 429 without any key being checked (0 = no limit)."
        ),
    )
    auth_failure_per_minute: float = Field(
        default=6.0,
        gt=0,
        description="Gateway: failed authentications per minute an address earns back.",
    )
    auth_verify_concurrency: int = Field(
        default=2,
        ge=1,
        description=(
            "Gateway: argon2 API-key checks running at once, each on a worker thread; a new key "
            "arriving while all are busy is answered 503."
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Gateway: addresses or CIDRs of reverse proxies whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed (empty: never; the peer address is the client)."
        ),
    )
    gateway_max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="Gateway: largest total size of a request's header fields (431 above).",
    )
    gateway_max_headers: int = Field(
        default=100, ge=8, description="Gateway: most header fields in one request (431 above)."
    )
    gateway_public_metrics: bool = Field(
        default=False,
        description=(
            "Gateway: also serve /metrics, unauthenticated, on the public listener (off: only "
            "on the internal one)."
        ),
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
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description=(
            'Gateway route table (TOML `[[routes]] method="POST" path="/api/v1/orders" '
            'saga="place-order"`): extra paths that start a saga. With SAGAWAY_SAGAS unset too, '
            "the example's POST /api/v1/orders."
        ),
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
