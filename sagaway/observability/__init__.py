"""Observability shared by every process: OpenTelemetry traces (`tracing`) and structured,
secret-free log lines carrying the ids of the message being handled (`logs`)."""
