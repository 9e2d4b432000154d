"""Shared fixtures: real servers (PostgreSQL, the Kafka-protocol broker) started by the tests."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.broker",
    "tests.fixtures.example_system",
    "tests.chaos.options",
    "tests.fixtures.deadline",
]
