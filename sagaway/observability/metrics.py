"""Serving the process-wide Prometheus registry from processes without an HTTP server of their own
(`sagaway orchestrator`, `sagaway participant`); docs/observability.md lists every metric."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

log = logging.getLogger("sagaway.metrics")


def serve_metrics(port: int, what: str, host: str = "0.0.0.0") -> WSGIServer | None:
    """With a port, serve /metrics on `host`:`port` from a daemon thread (returns the server, to
    `shutdown()`); 0 means off."""
    if not port:
        return None
    server, _thread = start_http_server(port, addr=host)
    log.info("%s metrics on http://%s:%d/metrics", what, host, port)
    return server
