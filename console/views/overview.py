"""The overview page and its htmx-refreshed panel: the "needs attention" band first, then saga
counts and rates, the gateway's open requests, outbox and consumer lag."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from starlette.requests import Request
from starlette.responses import Response

from console.attention import (
    AttentionFigures,
    Capped,
    LagGrowth,
    LagTrend,
    Thresholds,
    attention_entries,
    relay_stale,
)
from console.auth import require_user
from console.charts import bar_chart, line_chart
from console.consumer_lag import GroupLag
from console.queries.attention import (
    failed_sagas,
    held_sync_requests,
    new_dead_letters,
    overdue_timeouts,
)
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

# Each console's consumer lag as its overview refreshes saw it (console/state.py is not the place:
# only this page reads the trend).
_TRENDS: WeakKeyDictionary[Console, LagTrend] = WeakKeyDictionary()


def _growing_lag(console: Console, lag: list[GroupLag] | str, now: datetime) -> list[LagGrowth]:
    """Groups whose lag grows; none when the broker cannot say (the panel shows why)."""
    if isinstance(lag, str):
        return []
    trend = _TRENDS.get(console)
    if trend is None:
        trend = _TRENDS[console] = LagTrend(console.config.consumer_lag_growth_s)
    trend.observe(now, ((g.topic, g.group, g.lag) for g in lag))
    return trend.growing(now)


async def _overview_context(console: Console) -> dict[str, Any]:
    now = datetime.now(UTC)
    assert console.sources is not None
    async with console.db.connect() as conn:
        counts = await saga_counts(conn, now)
        rates = await finishes_per_minute(conn, now)
        in_flight = await recent_sagas(conn, IN_FLIGHT, limit=15)
        finished = await recent_sagas(conn, FINISHED, limit=15, since=now - timedelta(hours=1))
        failed = await failed_sagas(conn)
        letters = await new_dead_letters(conn)
        overdue = await overdue_timeouts(conn, now)
    config = console.config
    requests_figures: RequestFigures | None = None
    requests_error: str | None = None
    held: Capped | None = None
    if console.sources.gateway is None:
        requests_error = "the gateway's database is not configured or does not exist yet"
    else:
        try:
            async with console.sources.gateway.connect() as conn:
                requests_figures = await request_figures(conn)
                held = await held_sync_requests(conn, now, config.sync_wait_s)
        except Exception as exc:  # noqa: BLE001 - one source down must not break the page
            requests_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    outboxes = await asyncio.gather(*(read_outbox(s, now) for s in console.sources.services))
    lag = await console.consumer_lag()
    attention = attention_entries(
        AttentionFigures(failed, letters, overdue, held, outboxes, _growing_lag(console, lag, now)),
        Thresholds(config.relay_stale_after_s, config.sync_wait_s),
        now,
    )
    since = now - timedelta(hours=1)
    history = console.history.series("relay_lag_s", since)
    backlog = console.history.series("unpublished", since)
    return {
        "attention": attention,
        "stale_relays": {
            o.service for o in outboxes if relay_stale(o, now, config.relay_stale_after_s)
        },
        "failed_unhandled": failed,
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
        "consumer_lag": lag,
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
