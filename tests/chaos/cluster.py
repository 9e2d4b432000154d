"""The system as production runs it, for the chaos suite: every role its own `sagaway` process on
one PostgreSQL server (a database per service, a WAL relay process per database) and the
Kafka-protocol broker (tansu) — or `sagaway dev` alone on the embedded stack.

The processes are the harness's role processes (tests/harness/processes.py): started, kill -9'd
and restarted by name, each logging to one file (appended across restarts), so a failure can show
what every role said. The cluster owns its servers, unlike a test stack: the fault driver
restarts PostgreSQL, and a dozen processes need the broker to themselves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sagaway.settings.composed import Settings
from tests.harness.dev import dev_process
from tests.harness.processes import (
    RoleProcess,
    RoleProcesses,
    base_environment,
    run_sagaway,
    settings_environment,
)
from tests.servers.postgres import PostgresServer, free_port
from tests.servers.tansu import TansuServer

SAGAS_MODULE = "examples.place_order.saga"
DATABASES = ("orchestrator", "gateway", "inventory", "payments", "shipping")
PARTICIPANTS = ("inventory", "payments", "shipping")

# The tansu tuning of NOTES.md, and short intervals so a restarted role is back within seconds.
TUNING: dict[str, object] = {
    "topic_prefix": "chaos.",
    "sagas": [SAGAS_MODULE],
    "partitions": 4,
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 250,
    # Not the 10 ms of the latency tests: a dozen idle processes polling every 10 ms take a core.
    "fetch_max_wait_ms": 50,
    "producer_idempotence": False,
    "startup_retry_max_s": 1,
    "relay_heartbeat_interval_s": 1,
    "relay_standby_retry_s": 0.5,
    "relay_feedback_interval_s": 0.5,
    "relay_metrics_port": 0,
    "timer_poll_interval_ms": 100,
    "database_pool_size": 4,
    "rate_limit_per_s": 0,
    "gateway_internal_port": 0,
    "gateway_run_relay": False,
    "gateway_pending_poll_ms": 100,
    "log_level": "INFO",
}

# Generous: a dozen Python processes start at once on two cores, often beside other suites.
READY_TIMEOUT_S = 180.0


@dataclass
class Cluster:
    """`start()` migrates, seeds and starts every role; `roles` holds the processes the fault
    driver may kill. `embedded`: `sagaway dev` alone (the embedded broker, SQLite files) instead
    of every role on PostgreSQL + tansu."""

    root: Path
    embedded: bool = False
    orchestrators: int = 2
    gateways: int = 2
    postgres: PostgresServer = field(default_factory=PostgresServer)
    broker: TansuServer = field(default_factory=TansuServer)
    processes: RoleProcesses = field(init=False)

    def __post_init__(self) -> None:
        self.processes = RoleProcesses(self.root / "logs", self.root)

    @property
    def roles(self) -> dict[str, RoleProcess]:
        return self.processes.roles

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def gateway_urls(self) -> list[str]:
        return [
            role.url for role in self.roles.values() if role.kind in ("gateway", "dev") and role.url
        ]

    def url(self, database: str) -> str:
        return self.postgres.async_url(database)

    def environment(self, database: str | None = None) -> dict[str, str]:
        settings = Settings(**TUNING, kafka_bootstrap=self.broker.bootstrap, data_dir=self.data_dir)
        if database is not None:
            settings = settings.replace(database_url=self.url(database))
        return settings_environment(settings)

    def _role(self, name: str, database: str, args: list[str], url: str | None = None) -> None:
        self.processes.add(name, args, self.environment(database), url=url)

    def start(self, *, customers: int = 0, credit_cents: int = 0, skus: int = 0) -> None:
        """Every role up; `customers`, `credit_cents` and `skus` are the seed (PostgreSQL +
        tansu only: `sagaway dev` seeds its own)."""
        self.processes.logs.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded:
            self._start_dev()
            return
        self.postgres.start()
        self.broker.start()
        env = self.environment()
        for database in DATABASES:
            self.postgres.create_database(database)
            run_sagaway(env, self.root, "migrate", "--service", database,
                        "--database-url", self.url(database))  # fmt: skip
        run_sagaway(
            env, self.root, "seed", "--no-migrate",
            "--inventory-url", self.url("inventory"), "--payments-url", self.url("payments"),
            "--customers", str(customers), "--credit-cents", str(credit_cents),
            "--skus", str(skus), "--units", "1000000",
        )  # fmt: skip
        for database in DATABASES:
            self._role(f"relay-{database}", database, ["relay", "--service", database])
        for n in range(self.orchestrators):
            self._role(f"orchestrator-{n + 1}", "orchestrator", ["orchestrator"])
        for name in PARTICIPANTS:
            self._role(name, name, ["participant", name, "--no-relay"])
        for n in range(self.gateways):
            port = free_port()
            letter = "abcdefgh"[n]
            self._role(
                f"gateway-{letter}", "gateway",
                ["gateway", "--host", "127.0.0.1", "--port", str(port),
                 "--instance-id", f"gw-{letter}"],
                url=f"http://127.0.0.1:{port}",
            )  # fmt: skip
        for role in self.roles.values():
            role.start()
        for role in self.roles.values():
            if role.url:
                role.wait_ready(READY_TIMEOUT_S)

    def _start_dev(self) -> None:
        dev = dev_process(
            self.data_dir, self.processes.logs, split_stderr=False, rate_limit_per_s=0
        )
        self.roles["dev"] = dev
        dev.start().wait_ready(READY_TIMEOUT_S)

    def stop(self) -> None:
        self.processes.kill_all()
        if not self.embedded:
            self.broker.stop()
            self.postgres.stop()

    def audit(self) -> dict[str, Any]:
        if self.embedded:
            env = base_environment()
            env["SAGAWAY_DATA_DIR"] = str(self.data_dir)
            out = run_sagaway(env, self.root, "audit", "--json", check=False)
        else:
            out = run_sagaway(
                self.environment(), self.root, "audit", "--json",
                "--inventory-url", self.url("inventory"), "--payments-url", self.url("payments"),
                "--shipping-url", self.url("shipping"),
                "--orchestrator-url", self.url("orchestrator"),
                check=False,
            )  # fmt: skip
        return orjson.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        return self.postgres.execute(sql, database)

    async def aquery(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.query, database, sql)

    def log_tails(self) -> str:
        return self.processes.log_tails(3000 if self.embedded else 1500)
