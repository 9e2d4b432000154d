"""Sagaway's platform: settings, messaging, storage, outbox and inbox, observability, and the
composition root (`sagaway.cli`, `sagaway.dev`) that assembles every role from them.

docs/architecture.md draws the layers and says what may import what."""

__version__ = "0.1.0"
