"""The settings `sagaway dev` runs on: the ones it forces (embedded mode in the data dir, short
group sessions, the dev console login) and the ones it ignores (external servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sagaway.dev.data_dir import DevCredentials
from sagaway.settings import ConsoleUser
from sagaway.settings.composed import Settings

# Group membership on the embedded broker expires after session_timeout_ms: after a kill, the
# dead process's members hold their partitions that long. One process owns everything here, so
# a short timeout costs a heartbeat a second per member and makes a restart continue within
# seconds.
DEV_SESSION_TIMEOUT_MS = 3000
DEV_HEARTBEAT_INTERVAL_MS = 1000
# Batches this small keep two processes busy side by side: the orchestrator's first records are
# relayed to the participants' process while it works on the next ones. With the 500 a separate
# process wants, a backlog moved through the stages as one wave and each process waited for the
# other (docs/benchmarks.md, "Round seven": 263 → 370 sagas/s at 256 clients).
DEV_CONSUMER_MAX_RECORDS = 32


def dev_settings(settings: Settings, data_dir: Path | None = None) -> Settings:
    """The settings `sagaway dev` runs on: embedded mode in an absolute data_dir, and shorter
    group sessions and smaller consumer batches unless the user chose their own."""
    messaging = settings.messaging
    update: dict[str, Any] = {
        "data_dir": (data_dir or settings.storage.data_dir).expanduser().resolve(),
        "database_url": None,
        "kafka_bootstrap": None,
    }
    chosen = messaging.model_fields_set
    heartbeat = (
        messaging.heartbeat_interval_ms
        if "heartbeat_interval_ms" in chosen
        else DEV_HEARTBEAT_INTERVAL_MS
    )
    if "session_timeout_ms" not in chosen:
        # A member is dead after a session without heartbeats: keep room for three of them.
        update["session_timeout_ms"] = max(DEV_SESSION_TIMEOUT_MS, 3 * heartbeat)
    if "heartbeat_interval_ms" not in chosen:
        session = update.get("session_timeout_ms", messaging.session_timeout_ms)
        update["heartbeat_interval_ms"] = max(1, min(DEV_HEARTBEAT_INTERVAL_MS, session // 3))
    if "consumer_max_records" not in chosen:
        update["consumer_max_records"] = DEV_CONSUMER_MAX_RECORDS
    return settings.replace(**update)


def ignored_settings(settings: Settings) -> list[str]:
    """Settings that point at external servers, which `sagaway dev` does not use."""
    return [
        name
        for name, value in (
            ("SAGAWAY_DATABASE_URL", settings.storage.database_url),
            ("SAGAWAY_KAFKA_BOOTSTRAP", settings.messaging.kafka_bootstrap),
        )
        if value
    ]


def console_settings(settings: Settings, credentials: DevCredentials | None) -> Settings:
    """The console part of the settings under `sagaway dev`: the dev operator when no users are
    configured, a session secret that survives restarts, cookies over plain http on loopback."""
    from console.auth import hash_password

    console = settings.console
    update: dict[str, Any] = {}
    if credentials is not None:
        update["users"] = [
            ConsoleUser(
                name=credentials.user,
                role="operator",
                password_hash=hash_password(credentials.password),
            )
        ]
        if console.session_secret is None:
            update["session_secret"] = SecretStr(credentials.session_secret)
    if "cookie_secure" not in console.model_fields_set:
        update["cookie_secure"] = False
    return settings.model_copy(update={"console": console.model_copy(update=update)})
