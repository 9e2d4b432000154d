"""`sagaway relay` in a real subprocess, so tests can kill -9 it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sagaway.settings.composed import Settings

RELAY_SETTINGS = (
    "topic_prefix",
    "producer_idempotence",
    "relay_feedback_interval_s",
    "relay_prune_interval_s",
    "relay_heartbeat_interval_s",
    "relay_standby_retry_s",
    "relay_poll_interval_ms",
    "relay_batch_size",
    "startup_retry_max_s",
    "data_dir",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_wait_ms",
)


class RelayProcess:
    """One `sagaway relay --service S` process with the test's settings in its environment."""

    def __init__(
        self, settings: Settings, database_url: str, service: str, log_path: Path, *args: str
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
        env.update(settings.environment(RELAY_SETTINGS))
        env["SAGAWAY_DATABASE_URL"] = database_url
        if settings.messaging.kafka_bootstrap:
            env["SAGAWAY_KAFKA_BOOTSTRAP"] = settings.messaging.kafka_bootstrap
        env["SAGAWAY_LOG_LEVEL"] = "INFO"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sagaway.cli.main import main; main()",
                "relay",
                "--service",
                service,
                *args,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
