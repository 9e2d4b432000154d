"""The gateway's Prometheus figures, on a registry of its own (several apps may live in one
process, e.g. in tests or `sagaway dev`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sagaway_gateway_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sagaway_gateway_http_request_duration_seconds",
            "Time from receiving a request to answering it, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "sagaway_gateway_pending_sync_requests",
            "Sync requests held open, waiting for their saga to end.",
            registry=self.registry,
        )
        self.reply_lag = Histogram(
            "sagaway_gateway_reply_lag_seconds",
            "Time from the orchestrator sending a final reply to the gateway consuming it.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.callbacks = Counter(
            "sagaway_gateway_callbacks",
            "Callback POST attempts, by outcome (delivered, retry, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.sagas_started = Counter(
            "sagaway_gateway_sagas_started",
            "Requests accepted (each starts one saga), by saga type.",
            ["saga_type"],
            registry=self.registry,
        )

    def watch_pending(self, count: Callable[[], int]) -> None:
        self.pending.set_function(lambda: float(count()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
