"""The overview page and its htmx-refreshed panel: saga counts and rates, the gateway's open
requests, outbox and consumer lag."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from console.auth import require_user
from console.charts import bar_chart, line_chart
from console.queries.overview import (
    RequestFigures,
    finishes_per_minute,
    recent_sagas,
    request_figures,
    saga_counts,
)
from console.queries.saga_list import FINISHED, IN_FLIGHT
from console.sources import read_outbox
from console.state import Console, console_of


async def _overview_context(console: Console) -> dict[str, Any]:
    now = datetime.now(UTC)
    assert console.sources is not None
    async with console.db.connect() as conn:
        counts = await saga_counts(conn, now)
        rates = await finishes_per_minute(conn, now)
        in_flight = await recent_sagas(conn, IN_FLIGHT, limit=15)
        finished = await recent_sagas(conn, FINISHED, limit=15, since=now - timedelta(hours=1))
    requests_figures: RequestFigures | None = None
    requests_error: str | None = None
    if console.sources.gateway is None:
        requests_error = "the gateway's database is not configured or does not exist yet"
    else:
        try:
            async with console.sources.gateway.connect() as conn:
                requests_figures = await request_figures(conn)
        except Exception as exc:  # noqa: BLE001 - one source down must not break the page
            requests_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    outboxes = await asyncio.gather(*(read_outbox(s, now) for s in console.sources.services))
    since = now - timedelta(hours=1)
    history = console.history.series("relay_lag_s", since)
    backlog = console.history.series("unpublished", since)
    return {
        "counts": counts,
        "rates_chart": bar_chart(rates, title="Completions and compensations per minute"),
        "completed_last_hour": sum(n for _, n in rates["completed"]),
        "compensated_last_hour": sum(n for _, n in rates["compensated"]),
        "in_flight": in_flight,
        "finished": finished,
        "requests": requests_figures,
        "requests_error": requests_error,
        "outboxes": outboxes,
        "lag_chart": line_chart(
            history, start=since, end=now, title="Relay lag per service", unit="seconds"
        ),
        "backlog_chart": line_chart(
            backlog, start=since, end=now, title="Unpublished outbox rows per service", unit="rows"
        ),
        "consumer_lag": await console.consumer_lag(),
        "sample_s": console.config.sample_interval_s,
    }


async def overview(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    return console.render(request, "overview.html", **await _overview_context(console))


async def overview_panel(request: Request) -> Response:
    require_user(request)
    console = console_of(request)
    return console.render(request, "_overview_panel.html", **await _overview_context(console))
