"""Security test fixtures: the gateway fixtures of tests/gateway (embedded broker + SQLite only:
these tests are about the gateway's rules, not the stack) and the console fixtures of
tests/console, shared rather than copied."""

from __future__ import annotations

import pytest

from tests.console.conftest import make_client, seeded  # noqa: F401
from tests.gateway.conftest import double, gateway_settings, make_gateway  # noqa: F401


@pytest.fixture
def stack() -> str:
    return "embedded"
