"""The orchestrator's Prometheus metrics: sagas started and finished, conflicts, and events for
saga versions that are not loaded (docs/observability.md lists every metric)."""

from __future__ import annotations

from prometheus_client import Counter

UNKNOWN_DEFINITION = Counter(
    "sagaway_orchestrator_unknown_definition",
    "Events for sagas whose definition (type, version) is not loaded; the saga is left untouched.",
    ["saga_type", "version"],
)
SAGAS_STARTED = Counter(
    "sagaway_orchestrator_sagas_started", "Sagas started, by type.", ["saga_type"]
)
SAGAS_FINISHED = Counter(
    "sagaway_orchestrator_sagas_finished",
    "Sagas that reached a terminal status, by type and status.",
    ["saga_type", "status"],
)
SAGA_CONFLICTS = Counter(
    "sagaway_orchestrator_conflicts",
    "Transactions abandoned because another instance changed one of their sagas first.",
)
