"""The `--chaos-long` pytest option. A plugin of tests/conftest.py rather than part of
tests/chaos/conftest.py: pytest takes options only from conftests it loads before collection, and
a plain `pytest --chaos-long` from the repository root loads tests/chaos/ too late."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="chaos suite: the long form (1,000 sagas, or SAGAWAY_CHAOS_SAGAS) instead of CI's",
    )
