"""`sagaway gateway` and `sagaway console` run uvicorn with its own proxy handling off: uvicorn
would otherwise take the client address from X-Forwarded-For for any loopback peer before the
app's TrustedProxies sees the request, and rotating the header would dodge the per-address
limits (docs/security.md)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.harness.processes import RoleProcess, settings_environment, wait_until_ready
from tests.servers.tansu import free_port

pytestmark = pytest.mark.timeout(120)


def test_a_gateway_process_limits_by_the_peer_address_whatever_x_forwarded_for_says(
    tmp_path: Path,
) -> None:
    settings = tuned_settings(tmp_path / "data", relay_poll_interval_ms=10)
    upgrade(settings.storage.database_url_for("gateway"))
    port = free_port()
    env = settings_environment(settings, rate_limit_per_s=0.01, rate_limit_burst=2)
    gateway = RoleProcess(
        "gateway", ["gateway", "--port", str(port), "--internal-port", "0"], env,
        tmp_path / "gateway.log", tmp_path,
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/healthz", process=gateway.process, log_tail=gateway.log_tail)
        statuses = [
            httpx.get(
                f"{base}/api/v1/requests/{uuid.uuid4()}",
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
                timeout=10,
            ).status_code
            for n in range(1, 6)
        ]
        assert statuses.count(429) >= 3, statuses
    finally:
        gateway.stop()
