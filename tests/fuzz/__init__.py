"""Fuzz tests: poison records on every topic, and HTTP fuzzing of the gateway (schemathesis)."""
