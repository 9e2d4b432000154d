"""Serving the process-wide Prometheus registry from processes without an HTTP server of their own
(`sagaway orchestrator`, `sagaway participant`, `sagaway relay`); docs/observability.md lists
every metric."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from sagaway.observability.listeners import listener_unavailable

log = logging.getLogger("sagaway.metrics")


def serve_metrics(
    port: int, what: str, host: str = "0.0.0.0", setting: str = "SAGAWAY_METRICS_PORT"
) -> WSGIServer | None:
    """With a port, serve /metrics on `host`:`port` from a daemon thread (returns the server, to
    `shutdown()`); 0 means off. A port that cannot be taken raises ListenerUnavailable naming
    it and `setting`: call this before the role starts anything else."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise listener_unavailable(host, port, f"the {what} metrics", setting, exc) from None
    log.info("%s metrics on http://%s:%d/metrics", what, host, port)
    return server
