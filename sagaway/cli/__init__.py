"""The composition root: the `sagaway` verbs (`sagaway.cli.main`), the only modules that import
every face and build each role from its own part of the settings (docs/architecture.md)."""
