"""The saga orchestrator: the DSL sagas are declared in, the pure engine that decides each step,
and the shell that runs it over a database and a broker (docs/architecture.md)."""
