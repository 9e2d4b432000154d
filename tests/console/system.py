"""The whole system as a user runs it on one machine — each role its own `sagaway` process on a
shared data dir (embedded broker + SQLite files): orchestrator, the three example participants,
the gateway and the console. Processes are stopped (and can be stopped one at a time) by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from console.auth import hash_password
from tests.servers.postgres import free_port
from tests.servers.readiness import wait_until_ready

SAGAWAY = str(Path(sys.executable).with_name("sagaway"))
PARTICIPANTS = ("inventory", "payments", "shipping")
OPERATOR_PASSWORD = "browser-operator-pw"


@dataclass
class RunningSystem:
    data_dir: Path
    env: dict[str, str]
    gateway_url: str
    console_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = Path()

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [SAGAWAY, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def start_participant(self, name: str) -> None:
        self.start(name, "participant", name)

    def post_saga(self, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.gateway_url}/api/v1/sagas/place-order",
            json=body,
            headers={"Prefer": "respond-async"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.logs.glob("*.log"))
        )


def _run(env: dict[str, str], cwd: Path, *args: str) -> None:
    subprocess.run([SAGAWAY, *args], env=env, cwd=cwd, check=True, capture_output=True, timeout=120)


def _wait_http(url: str, system: RunningSystem, timeout_s: float = 60.0) -> None:
    wait_until_ready(
        url, log_tail=system.log_tail, timeout_s=timeout_s, ready=lambda status: status < 500
    )


def start_system(data_dir: Path, logs: Path | None = None) -> RunningSystem:
    """Migrate, seed and start every role; `logs` (default data_dir/logs) gets one file each."""
    gateway_port, console_port = free_port(), free_port()
    console = {
        "users": [
            {
                "name": "admin",
                "role": "operator",
                "password_hash": hash_password(OPERATOR_PASSWORD),
            },
        ],
        "port": console_port,
        "session_secret": "browser-test-secret",
        "cookie_secure": False,  # plain http on loopback
        "refresh_interval_s": 1.0,
        "sample_interval_s": 1.0,
    }
    env = {
        **os.environ,
        "SAGAWAY_DATA_DIR": str(data_dir),
        "SAGAWAY_SAGAS": "examples.place_order.saga",
        "SAGAWAY_GATEWAY_HOST": "127.0.0.1",
        "SAGAWAY_GATEWAY_PORT": str(gateway_port),
        "SAGAWAY_GATEWAY_INTERNAL_PORT": "0",
        "SAGAWAY_RATE_LIMIT_PER_S": "0",
        "SAGAWAY_EMBEDDED_POLL_INTERVAL_MS": "20",
        "SAGAWAY_RELAY_POLL_INTERVAL_MS": "10",
        "SAGAWAY_RELAY_HEARTBEAT_INTERVAL_S": "1",
        "SAGAWAY_TIMER_POLL_INTERVAL_MS": "100",
        "SAGAWAY_SESSION_TIMEOUT_MS": "2000",
        "SAGAWAY_HEARTBEAT_INTERVAL_MS": "250",
        "SAGAWAY_STARTUP_RETRY_MAX_S": "1",
        "SAGAWAY_CONSOLE": json.dumps(console),
        "SAGAWAY_LOG_LEVEL": "INFO",
    }
    env.pop("SAGAWAY_DATABASE_URL", None)
    env.pop("SAGAWAY_KAFKA_BOOTSTRAP", None)
    env.pop("SAGAWAY_CONFIG", None)
    logs = logs or data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    system = RunningSystem(
        data_dir,
        env,
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{console_port}",
        logs=logs,
    )
    for service in ("orchestrator", "gateway", *PARTICIPANTS):
        _run(env, data_dir, "migrate", "--service", service)
    _run(env, data_dir, "seed", "--customers", "10", "--skus", "10")
    try:
        system.start("orchestrator", "orchestrator", "--with-relay")
        for name in PARTICIPANTS:
            system.start_participant(name)
        system.start("gateway", "gateway")
        system.start("console", "console")
        _wait_http(f"{system.gateway_url}/healthz", system)
        _wait_http(f"{system.console_url}/login", system)
    except BaseException:
        system.stop_all()
        raise
    return system
