"""The composition root: the `sagaway` verbs, the only modules that import every face and build
each role from its settings (docs/architecture.md)."""

from sagaway.cli.main import main

__all__ = ["main"]
