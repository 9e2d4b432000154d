"""The operator console: server-rendered pages over the saga and outbox tables."""
