"""The compose file every test of tests/docker reads, parsed once per module."""

from __future__ import annotations

from typing import Any

import pytest

from tests.docker.compose_file import COMPOSE_FILE, load_compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]
