"""Sagaway's orchestrator: the saga DSL and engine, and the plumbing every service shares."""

__version__ = "0.1.0"
