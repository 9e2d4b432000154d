"""The whole system for end-to-end gateway tests: the real orchestrator and example participants
(tests/examples/place_order/system.py), a gateway database, and a `sagaway gateway` process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from sagaway.settings.composed import COMPONENTS, Settings
from tests.examples.place_order.system import System
from tests.gateway.conftest import routes_variable
from tests.servers.readiness import wait_until_ready
from tests.servers.tansu import free_port

SAGAWAY = Path(sys.executable).with_name("sagaway")


def gateway_database(system: System, request: Any) -> str:
    """A migrated database for the gateway on the system's stack."""
    if system.kind == "kafka":
        server = request.getfixturevalue("postgres_server")
        name = f"gate_{uuid.uuid4().hex[:12]}"
        server.create_database(name, template=request.getfixturevalue("_migrated_template"))
        system.cleanup.append(lambda: server.drop_database(name))
        return str(server.async_url(name))
    template = request.getfixturevalue("sqlite_template")
    path = system.settings.storage.data_dir / "gateway.db"
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


def environment(settings: Settings, **extra: object) -> dict[str, str]:
    """SAGAWAY_* variables for a subprocess that joins `settings`' broker and topics."""
    names = (
        "topic_prefix",
        "data_dir",
        "kafka_bootstrap",
        "database_url",
        "session_timeout_ms",
        "heartbeat_interval_ms",
        "fetch_max_wait_ms",
        "producer_idempotence",
        "embedded_poll_interval_ms",
        "partitions",
        "relay_poll_interval_ms",
        "relay_slot_name",
        "relay_standby_retry_s",
        "startup_retry_max_s",
        "gateway_pending_poll_ms",
        "gateway_default_wait_s",
        "rate_limit_per_s",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    values = {
        name: value
        for component in COMPONENTS
        for name, value in getattr(settings, component).model_dump().items()
    }
    for name in names:
        value = values.get(name)
        if value is not None:
            env[f"SAGAWAY_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    env["SAGAWAY_SAGAS"] = ",".join(settings.orchestrator.sagas or [])
    env["SAGAWAY_ROUTES"] = routes_variable(settings.gateway.routes)
    for name, value in extra.items():
        env[f"SAGAWAY_{name.upper()}"] = str(value)
    return env


class GatewayProcess:
    """`sagaway gateway` as a real process on a free port."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        env = environment(self.settings, gateway_port=self.port, gateway_internal_port=0)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it
        self.process = subprocess.Popen(
            [str(SAGAWAY), "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until_ready(
            self.url + "/readyz", process=self.process, log_tail=self.log_text, timeout_s=timeout_s
        )
        return self

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
