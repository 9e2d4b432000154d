"""Fuzz test fixtures: the gateway fixtures of tests/gateway (both stacks), shared, not copied."""

from tests.gateway.conftest import double, gateway_settings, make_gateway, stack  # noqa: F401
