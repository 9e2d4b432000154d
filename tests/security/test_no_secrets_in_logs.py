"""Secrets never reach the logs: API keys, bearer tokens and their signing secret, the callback
secret and the database password — neither in process (every logger at DEBUG) nor in the output
of a real `sagaway gateway`, nor when `sagaway migrate` cannot reach its database."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway.auth import hash_api_key, issue_token
from tests.gateway.conftest import ORDERS_ROUTE, SAGA_MODULES, MakeGateway, order, routes_variable
from tests.harness.processes import RoleProcess
from tests.servers.tansu import free_port

SAGAWAY = Path(sys.executable).with_name("sagaway")

API_KEY = "ak-9f3c2e71d0b84a6b-live"
WRONG_KEY = "ak-0000wrong1111key-live"
BEARER_SECRET = "bs-5e8d1c7a2b9f4e60-secret"
CALLBACK_SECRET = "cs-1a2b3c4d5e6f7081-secret"
DB_PASSWORD = "pw-Zq8vR3kLm0Tn6Yx"
# Issued at import (collection) time: valid long enough for a slow full-suite run.
TOKEN = issue_token(BEARER_SECRET, "reports", ttl_s=86_400)
FORGED = issue_token("not-the-secret", "reports", ttl_s=86_400)


def secrets_in(text: str) -> list[str]:
    """Every secret (or its signature part, for tokens) found in `text`."""
    found = [
        s for s in (API_KEY, WRONG_KEY, BEARER_SECRET, CALLBACK_SECRET, DB_PASSWORD) if s in text
    ]
    for name, token in (("token", TOKEN), ("forged token", FORGED)):
        if token.rsplit(".", 1)[1] in text:
            found.append(name)
    return found


def with_password(url: str) -> str:
    return make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


async def exercise(client: httpx.AsyncClient) -> None:
    """Good and bad credentials on every kind of route."""
    calls: list[tuple[str, str, dict[str, str]]] = [
        ("POST", "/api/v1/orders", {"X-API-Key": API_KEY, "Prefer": "respond-async"}),
        ("POST", "/api/v1/orders", {"X-API-Key": WRONG_KEY}),
        ("POST", "/api/v1/orders", {"Authorization": f"ApiKey {WRONG_KEY}"}),
        ("POST", "/api/v1/orders", {"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=0"}),
        ("POST", "/api/v1/orders", {"Authorization": f"Bearer {FORGED}"}),
        ("POST", "/api/v1/orders", {"Authorization": f"Bearer {TOKEN}x"}),
        ("POST", "/api/v1/sagas/no-such-saga", {"X-API-Key": API_KEY}),
        ("GET", "/api/v1/requests/unknown", {"X-API-Key": API_KEY}),
        ("GET", "/api/v1/requests/unknown", {"X-API-Key": WRONG_KEY}),
        ("GET", "/readyz", {}),
    ]
    statuses = []
    for method, path, headers in calls:
        response = await client.request(method, path, json=order(), headers=headers)
        statuses.append(response.status_code)
        assert not secrets_in(response.text), (method, path, headers)
    callback = await client.post(
        "/api/v1/orders",
        json=order(),
        headers={"X-API-Key": API_KEY, "Callback-Url": f"https://u:{API_KEY}@127.0.0.1/h"},
    )
    assert callback.status_code == 422 and not secrets_in(callback.text)
    assert statuses[:6] == [202, 401, 401, 202, 401, 401], statuses


async def test_a_gateway_in_process_logs_no_secret_at_debug(
    make_gateway: MakeGateway, migrated_pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await make_gateway(
        "gw-secrets",
        database_url=with_password(migrated_pg_url),
        api_keys={"shop": hash_api_key(API_KEY)},
        bearer_secret=BEARER_SECRET,
        callback_secret=CALLBACK_SECRET,
    )
    await exercise(running.client)
    await running.gateway.stop()
    assert caplog.records, "the gateway logged nothing at all: the capture is not working"
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records)
    assert not secrets_in(text)


def test_sagaway_gateway_output_holds_no_secret(
    tmp_path: Path, kafka_bootstrap: str, migrated_pg_url: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env.update(
        {
            "SAGAWAY_DATA_DIR": str(tmp_path),
            "SAGAWAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SAGAWAY_DATABASE_URL": with_password(migrated_pg_url),
            "SAGAWAY_TOPIC_PREFIX": f"sec{port}.",
            "SAGAWAY_SAGAS": ",".join(SAGA_MODULES),
            "SAGAWAY_ROUTES": routes_variable([ORDERS_ROUTE]),
            "SAGAWAY_API_KEYS": f'{{"shop": "{hash_api_key(API_KEY)}"}}',
            "SAGAWAY_BEARER_SECRET": BEARER_SECRET,
            "SAGAWAY_CALLBACK_SECRET": CALLBACK_SECRET,
            "SAGAWAY_LOG_LEVEL": "DEBUG",
            "SAGAWAY_PRODUCER_IDEMPOTENCE": "false",
            "SAGAWAY_SESSION_TIMEOUT_MS": "2000",
            "SAGAWAY_HEARTBEAT_INTERVAL_MS": "250",
            "SAGAWAY_FETCH_MAX_WAIT_MS": "10",
            "SAGAWAY_RELAY_SLOT_NAME": f"sec_{port}",
            "SAGAWAY_GATEWAY_PORT": str(port),
            "SAGAWAY_GATEWAY_INTERNAL_PORT": "0",
        }
    )
    log_path = tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: DEBUG output would fill a pipe.
    process = RoleProcess("gateway", ["gateway"], env, log_path, tmp_path, url=url).start()
    try:
        process.wait_ready(30)

        async def run() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                await exercise(client)

        asyncio.run(run())
    finally:
        process.stop(timeout_s=15)
    text = log_path.read_text(errors="replace")
    assert "gateway" in text and "DEBUG" in text.upper(), text[-2000:]
    assert not secrets_in(text), text[-3000:]


def test_sagaway_migrate_against_a_down_server_does_not_print_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql+asyncpg://sagaway:{DB_PASSWORD}@127.0.0.1:{free_port()}/sagaway"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWAY_")}
    env.update({"SAGAWAY_DATA_DIR": str(tmp_path), "SAGAWAY_LOG_LEVEL": "DEBUG"})
    result = subprocess.run(
        [str(SAGAWAY), "migrate", "--database-url", url, "--wait", "1"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    text = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0
    assert "127.0.0.1" in text, text  # it does say which database is down
    assert not secrets_in(text), text
