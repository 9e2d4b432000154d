"""The system as production runs it, for the chaos suite: every role its own `sagaway` process on
one PostgreSQL server (a database per service, a WAL relay process per database) and the
Kafka-protocol broker (tansu) — or `sagaway dev` alone on the embedded stack.

Processes are started, kill -9'd and restarted by name; their output goes to one log file each
(appended across restarts), so a failure can show what every role said.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.servers.postgres import PostgresServer, free_port
from tests.servers.readiness import wait_until_ready
from tests.servers.tansu import TansuServer

SAGAWAY = str(Path(sys.executable).with_name("sagaway"))
SAGAS_MODULE = "examples.place_order.saga"
DATABASES = ("orchestrator", "gateway", "inventory", "payments", "shipping")
PARTICIPANTS = ("inventory", "payments", "shipping")
TOPIC_PREFIX = "chaos."

# The tansu tuning of NOTES.md, and short intervals so a restarted role is back within seconds.
TUNING: dict[str, str] = {
    "SAGAWAY_TOPIC_PREFIX": TOPIC_PREFIX,
    "SAGAWAY_SAGAS": SAGAS_MODULE,
    "SAGAWAY_PARTITIONS": "4",
    "SAGAWAY_SESSION_TIMEOUT_MS": "2000",
    "SAGAWAY_HEARTBEAT_INTERVAL_MS": "250",
    # Not the 10 ms of the latency tests: a dozen idle processes polling every 10 ms take a core.
    "SAGAWAY_FETCH_MAX_WAIT_MS": "50",
    "SAGAWAY_PRODUCER_IDEMPOTENCE": "false",
    "SAGAWAY_STARTUP_RETRY_MAX_S": "1",
    "SAGAWAY_RELAY_HEARTBEAT_INTERVAL_S": "1",
    "SAGAWAY_RELAY_STANDBY_RETRY_S": "0.5",
    "SAGAWAY_RELAY_FEEDBACK_INTERVAL_S": "0.5",
    "SAGAWAY_RELAY_METRICS_PORT": "0",
    "SAGAWAY_TIMER_POLL_INTERVAL_MS": "100",
    "SAGAWAY_DATABASE_POOL_SIZE": "4",
    "SAGAWAY_RATE_LIMIT_PER_S": "0",
    "SAGAWAY_GATEWAY_INTERNAL_PORT": "0",
    "SAGAWAY_GATEWAY_RUN_RELAY": "false",
    "SAGAWAY_GATEWAY_PENDING_POLL_MS": "100",
    "SAGAWAY_LOG_LEVEL": "INFO",
}


def base_environment() -> dict[str, str]:
    """The caller's environment without any SAGAWAY_* setting, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RoleProcess:
    """One `sagaway …` process that can be started, kill -9'd and started again."""

    name: str
    kind: str  # orchestrator | participant | relay | gateway | dev
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    url: str | None = None  # gateways and dev: the base URL of their HTTP API
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [SAGAWAY, *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, sockets are cut, nothing is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_sagaway(env: dict[str, str], cwd: Path, *args: str, timeout_s: float = 120) -> str:
    """Run a one-shot verb (migrate, seed, audit); its stdout, or AssertionError with both."""
    done = subprocess.run(
        [SAGAWAY, *args], env=env, cwd=cwd, capture_output=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0 and args[0] != "audit":
        raise AssertionError(
            f"sagaway {' '.join(args[:3])} exited {done.returncode}:\n"
            f"{done.stdout.decode(errors='replace')}\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")


# Generous: a dozen Python processes start at once on two cores, often beside other suites.
READY_TIMEOUT_S = 180.0


def wait_http(
    url: str, role: RoleProcess | None = None, timeout_s: float = READY_TIMEOUT_S
) -> None:
    wait_until_ready(
        url,
        process=role.process if role is not None else None,
        log_tail=role.log_tail if role is not None else str,
        timeout_s=timeout_s,
    )


@dataclass
class Cluster:
    """Every role as its own process on PostgreSQL + tansu. `start()` migrates, seeds and starts
    them; `roles` holds the processes the fault driver may kill."""

    root: Path
    orchestrators: int = 2
    gateways: int = 2
    postgres: PostgresServer = field(default_factory=PostgresServer)
    broker: TansuServer = field(default_factory=TansuServer)
    roles: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def url(self, database: str) -> str:
        return self.postgres.async_url(database)

    def environment(self, database: str | None = None) -> dict[str, str]:
        env = {**base_environment(), **TUNING}
        env["SAGAWAY_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        env["SAGAWAY_DATA_DIR"] = str(self.root / "data")
        if database is not None:
            env["SAGAWAY_DATABASE_URL"] = self.url(database)
        return env

    @property
    def gateway_urls(self) -> list[str]:
        return [role.url for role in self.roles.values() if role.kind == "gateway" and role.url]

    def _role(self, name: str, kind: str, database: str, args: list[str], **extra: Any) -> None:
        env = self.environment(database)
        self.roles[name] = RoleProcess(
            name, kind, args, env, self.logs / f"{name}.log", self.root, **extra
        )

    def start(self, *, customers: int, credit_cents: int, skus: int) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
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
            self._role(f"relay-{database}", "relay", database, ["relay", "--service", database])
        for n in range(self.orchestrators):
            self._role(f"orchestrator-{n + 1}", "orchestrator", "orchestrator", ["orchestrator"])
        for name in PARTICIPANTS:
            self._role(name, "participant", name, ["participant", name, "--no-relay"])
        for n in range(self.gateways):
            port = free_port()
            letter = "abcdefgh"[n]
            self._role(
                f"gateway-{letter}", "gateway", "gateway",
                ["gateway", "--host", "127.0.0.1", "--port", str(port),
                 "--instance-id", f"gw-{letter}"],
                url=f"http://127.0.0.1:{port}",
            )  # fmt: skip
        for role in self.roles.values():
            role.start()
        for role in self.roles.values():
            if role.url:
                wait_http(role.url + "/readyz", role)

    def wait_ready(self, role: RoleProcess, timeout_s: float = READY_TIMEOUT_S) -> None:
        if role.url:
            wait_http(role.url + "/readyz", role, timeout_s)

    def stop(self) -> None:
        for role in self.roles.values():
            role.kill9()
        self.broker.stop()
        self.postgres.stop()

    def audit(self) -> dict[str, Any]:
        out = run_sagaway(
            self.environment(), self.root, "audit", "--json",
            "--inventory-url", self.url("inventory"), "--payments-url", self.url("payments"),
            "--shipping-url", self.url("shipping"),
            "--orchestrator-url", self.url("orchestrator"),
        )  # fmt: skip
        return orjson.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        return self.postgres.execute(sql, database)

    async def aquery(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.query, database, sql)

    def log_tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {role.name}\n{role.log_tail(chars)}" for role in self.roles.values())


@dataclass
class DevCluster:
    """`sagaway dev` alone: the embedded broker and SQLite files in one process."""

    root: Path
    roles: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def gateway_urls(self) -> list[str]:
        return [self.roles["dev"].url or ""]

    def start(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = base_environment()
        env["SAGAWAY_RATE_LIMIT_PER_S"] = "0"
        self.roles["dev"] = RoleProcess(
            "dev", "dev",
            ["dev", "--port", str(port), "--data-dir", str(self.data_dir)],
            env, self.root / "logs" / "dev.log", self.root, url=f"http://127.0.0.1:{port}",
        )  # fmt: skip
        self.roles["dev"].start()
        self.wait_ready(self.roles["dev"])

    def wait_ready(self, role: RoleProcess, timeout_s: float = READY_TIMEOUT_S) -> None:
        wait_http(f"{role.url}/readyz", role, timeout_s)

    def stop(self) -> None:
        for role in self.roles.values():
            role.kill9()

    def audit(self) -> dict[str, Any]:
        env = base_environment()
        env["SAGAWAY_DATA_DIR"] = str(self.data_dir)
        out = run_sagaway(env, self.root, "audit", "--json")
        return orjson.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {role.name}\n{role.log_tail(chars)}" for role in self.roles.values())
