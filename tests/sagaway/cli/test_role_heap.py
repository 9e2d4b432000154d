"""Every long-running role, once started, leaves its start-up heap out of garbage collections
(sagaway/observability/gc_tuning.py): its /metrics says how many objects it froze."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from sagaway.storage.migrate import upgrade
from tests.fixtures.broker import tuned_settings
from tests.harness.processes import RoleProcess, settings_environment
from tests.harness.waiting import eventually_sync
from tests.servers.tansu import free_port

pytestmark = pytest.mark.timeout(120)

FROZEN = re.compile(r"^sagaway_gc_frozen_objects ([0-9.e+]+)$", re.M)


def frozen_objects(metrics_url: str) -> float | None:
    """The role's frozen count once it is above zero (it is 0 until the role has started)."""
    try:
        found = FROZEN.findall(httpx.get(metrics_url, timeout=2).text)
    except httpx.HTTPError:
        return None
    return float(found[0]) if found and float(found[0]) > 0 else None


@pytest.mark.parametrize(
    ("name", "args", "database", "port_setting"),
    [
        ("orchestrator", ["orchestrator"], "orchestrator", "metrics_port"),
        ("participant", ["participant", "inventory"], "inventory", "metrics_port"),
        ("relay", ["relay", "--service", "payments"], "payments", "relay_metrics_port"),
        ("gateway", ["gateway", "--port", "0"], "gateway", "gateway_internal_port"),
    ],
)
def test_a_started_role_has_frozen_its_start_up_heap(
    name: str, args: list[str], database: str, port_setting: str, tmp_path: Path
) -> None:
    settings = tuned_settings(tmp_path / "data")
    upgrade(settings.storage.database_url_for(database))
    port = free_port()
    env = settings_environment(settings, **{port_setting: port})
    process = RoleProcess(name, args, env, tmp_path / f"{name}.log", tmp_path).start()
    try:
        frozen = eventually_sync(
            lambda: frozen_objects(f"http://127.0.0.1:{port}/metrics"),
            timeout_s=60,
            what=lambda: f"{name} to report its frozen heap:\n{process.log_tail()}",
        )
        assert frozen is not None and frozen > 10_000
    finally:
        process.stop()
