"""Fixtures of the chaos suite: `--chaos-long` (or SAGAWAY_CHAOS_LONG=1) runs the long form —
1,000 sagas, or SAGAWAY_CHAOS_SAGAS — instead of the bounded one CI runs; SAGAWAY_CHAOS_SEED
replays a run's faults and orders."""

from __future__ import annotations

import os
import random

import pytest

BOUNDED_TIMEOUT_S = 600
LONG_TIMEOUT_S = 3 * 3600


def long_form(config: pytest.Config) -> bool:
    """`--chaos-long` (registered by tests/chaos/options.py) or SAGAWAY_CHAOS_LONG=1."""
    flag = config.getoption("--chaos-long", default=False)
    return bool(flag) or os.environ.get("SAGAWAY_CHAOS_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timeout = LONG_TIMEOUT_S if long_form(config) else BOUNDED_TIMEOUT_S
    for item in items:
        if item.nodeid.startswith("tests/chaos/"):
            item.add_marker(pytest.mark.timeout(timeout))


@pytest.fixture
def chaos_long(request: pytest.FixtureRequest) -> bool:
    return long_form(request.config)


@pytest.fixture
def chaos_seed() -> int:
    """SAGAWAY_CHAOS_SEED if set, else a fresh one (printed by the test, to replay it)."""
    given = os.environ.get("SAGAWAY_CHAOS_SEED")
    return int(given) if given else random.SystemRandom().randrange(1, 2**31)
