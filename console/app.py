"""The operator console: a Starlette app of server-rendered pages (Jinja2), refreshed in place by
htmx, mountable anywhere (`sagaway dev` mounts it at /console; every link comes from url_for).

`create_console_app(settings)` is the whole public surface; the routes are below, one handler per
page or action.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import queries
from console.auth import (
    ConsoleConfigError,
    Forbidden,
    NotAuthenticated,
    UserDirectory,
    current_user,
    log_in,
    log_out,
    require_operator,
    require_user,
)
from console.charts import bar_chart, line_chart
from console.consumer_lag import ConsumerLagUnavailable, GroupLag, consumer_lag
from console.csrf import FIELD as CSRF_FIELD
from console.csrf import CsrfRefused, check_csrf, csrf_token
from console.dead_letters import (
    DeadLetterCollector,
    DeadLetterNotFound,
    DeadLetterResolved,
    discard,
    replay,
    run_collector,
)
from console.diagnosis import diagnose
from console.sources import ConsoleSources, LagHistory, open_sources, read_outbox
from console.timeline import build_timeline
from orchestrator.models import operator_actions
from orchestrator.operator_actions import (
    ActionRejected,
    InvalidAction,
    SagaNotFound,
    apply_action,
)
from orchestrator.registry import SagaRegistry, load_registry
from orchestrator.service import SagaConflict
from sagaway.messaging.topics import TopicNames
from sagaway.messaging.transport import Transport, TransportError
from sagaway.settings import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "sagaway_console"
ACTION_LABELS = {
    "retry": "Retry step now",
    "skip": "Skip step",
    "abort": "Abort (compensate now)",
    "resume": "Resume",
}
BULK_ACTIONS = ("retry", "abort")
CONSUMER_LAG_CACHE_S = 5.0


def _json(value: Any) -> str:
    """Pretty JSON as plain text; the template escapes it (saga data may hold markup)."""
    try:
        return orjson.dumps(
            value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
        ).decode()
    except TypeError:
        return repr(value)


def _json_compact(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def _age(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "–"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 0:
        return "in " + _age(now or datetime.now(UTC), value)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "–"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "svg"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = _json
    env.filters["json_compact"] = _json_compact
    env.filters["age"] = _age
    env.filters["time"] = _time
    env.filters["seconds"] = _seconds
    return env


class Console:
    """The app's state: settings, sources, templates, background tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: SagaRegistry | None,
        transport: Transport | None,
        orchestrator_engine: AsyncEngine | None,
        background: bool,
    ) -> None:
        self.settings = settings
        self.config = settings.console
        self.users = UserDirectory(self.config.users)
        if not len(self.users):
            raise ConsoleConfigError(
                "no console users are configured: add [[console.users]] with a name, a role and "
                "a password_hash (from `sagaway console --hash-password`)"
            )
        self.registry = registry
        self.topics = TopicNames(settings.topic_prefix)
        self._given_transport = transport
        self.transport: Transport | None = transport
        self._given_engine = orchestrator_engine
        self.background = background
        self.sources: ConsoleSources | None = None
        self.history = LagHistory(self.config.sample_interval_s)
        self.env = _environment()
        self.tasks: list[asyncio.Task[None]] = []
        self._lag_cache: tuple[float, list[GroupLag] | str] | None = None

    @property
    def db(self) -> AsyncEngine:
        assert self.sources is not None, "the console app is not started"
        return self.sources.orchestrator

    async def start(self) -> None:
        if self.sources is not None:
            return
        self.sources = open_sources(self.settings, self._given_engine)
        if self.registry is None:
            self.registry = load_registry(self.settings)
        if not self.background:
            return
        self.tasks.append(asyncio.create_task(self.history.run(self.sources), name="console-lag"))
        if self.transport is None:
            from sagaway.messaging.factory import connect_transport

            async def connect_then_collect() -> None:
                self.transport = await connect_transport(self.settings)
                await run_collector(DeadLetterCollector(self.settings, self.transport, self.db))

            self.tasks.append(asyncio.create_task(connect_then_collect(), name="console-dlq"))
        else:
            collector = DeadLetterCollector(self.settings, self.transport, self.db)
            self.tasks.append(asyncio.create_task(run_collector(collector), name="console-dlq"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.transport is not None and self._given_transport is None:
            await self.transport.close()
        if self.sources is not None:
            await self.sources.close()
            self.sources = None
        self.tasks.clear()

    async def consumer_lag(self) -> list[GroupLag] | str:
        loop = asyncio.get_running_loop()
        # Kafka's admin round trips are worth caching; the embedded broker's file is cheap to read.
        ttl = CONSUMER_LAG_CACHE_S if self.settings.kafka_bootstrap else 0.5
        if self._lag_cache and loop.time() - self._lag_cache[0] < ttl:
            return self._lag_cache[1]
        result: list[GroupLag] | str
        try:
            result = await consumer_lag(self.settings)
        except (ConsumerLagUnavailable, TimeoutError) as exc:
            result = str(exc) or "timed out"
        self._lag_cache = (loop.time(), result)
        return result

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        user = current_user(request)
        context.update(
            request=request,
            user=user,
            url=lambda name, **path: _path(request, name, **path),
            csrf_field=Markup(
                f'<input type="hidden" name="{CSRF_FIELD}" value="{csrf_token(request)}">'
            ),
            refresh_s=self.config.refresh_interval_s,
            action_labels=ACTION_LABELS,
            now=datetime.now(UTC),
        )
        html = self.env.get_template(name).render(context)
        return HTMLResponse(html, status_code=status_code)


def _console(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def _path(request: Request, name: str, **path: Any) -> str:
    """The path of a route, mount prefix included; paths, not absolute URLs, so the console works
    behind a proxy that rewrites the host or scheme."""
    return request.url_for(name, **path).path


def _link(request: Request, name: str, params: dict[str, str] | None = None, **path: Any) -> str:
    url = _path(request, name, **path)
    return f"{url}?{urlencode(params)}" if params else url


def _safe_next(request: Request, target: str | None) -> str:
    # Only a path on this site: no scheme, no host, no protocol-relative "//evil".
    home = _path(request, "overview")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    return target


# ---------------------------------------------------------------- login


async def login_form(request: Request) -> Response:
    console = _console(request)
    if current_user(request) is not None:
        return RedirectResponse(_safe_next(request, request.query_params.get("next")), 303)
    return console.render(request, "login.html", next=request.query_params.get("next", ""))


async def login(request: Request) -> Response:
    console = _console(request)
    form = await request.form()
    check_csrf(request, form)
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    user = await asyncio.to_thread(console.users.authenticate, name, password)
    if user is None:
        return console.render(
            request,
            "login.html",
            status_code=401,
            error="Wrong user name or password.",
            next=str(form.get("next", "")),
            username=name,
        )
    log_in(request, user)
    log.info("console: %s (%s) logged in", user.name, user.role)
    return RedirectResponse(_safe_next(request, str(form.get("next", ""))), 303)


async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    log_out(request)
    return RedirectResponse(_path(request, "login_form"), 303)


# ---------------------------------------------------------------- overview


async def _overview_context(console: Console) -> dict[str, Any]:
    now = datetime.now(UTC)
    assert console.sources is not None
    async with console.db.connect() as conn:
        counts = await queries.saga_counts(conn, now)
        rates = await queries.finishes_per_minute(conn, now)
        in_flight = await queries.recent_sagas(conn, queries.IN_FLIGHT, limit=15)
        finished = await queries.recent_sagas(
            conn, queries.FINISHED, limit=15, since=now - timedelta(hours=1)
        )
    requests_figures: queries.RequestFigures | None = None
    requests_error: str | None = None
    if console.sources.gateway is None:
        requests_error = "the gateway's database is not configured or does not exist yet"
    else:
        try:
            async with console.sources.gateway.connect() as conn:
                requests_figures = await queries.request_figures(conn)
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
    console = _console(request)
    return console.render(request, "overview.html", **await _overview_context(console))


async def overview_panel(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    return console.render(request, "_overview_panel.html", **await _overview_context(console))


# ---------------------------------------------------------------- sagas


def _page_cursors(request: Request) -> tuple[queries.Cursor | None, queries.Cursor | None]:
    before = request.query_params.get("before")
    after = request.query_params.get("after")
    return (
        queries.Cursor.decode(before) if before else None,
        queries.Cursor.decode(after) if after else None,
    )


async def saga_list(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    filters = queries.SagaFilter.from_params(request.query_params)
    before, after = _page_cursors(request)
    async with console.db.connect() as conn:
        page = await queries.list_sagas(
            conn, filters, page_size=console.config.page_size, before=before, after=after
        )
        types = await queries.saga_types(conn)
    params = filters.params()
    return console.render(
        request,
        "sagas.html",
        page=page,
        filters=filters,
        types=types,
        statuses=queries.SAGA_STATUSES,
        ages=queries.AGE_LABELS,
        older_link=_link(request, "saga_list", {**params, "before": page.older.encode()})
        if page.older
        else None,
        newer_link=_link(request, "saga_list", {**params, "after": page.newer.encode()})
        if page.newer
        else None,
        first_link=_link(request, "saga_list", params) if (before or after) else None,
        bulk_links={
            action: _link(request, "bulk_confirm", {**params, "action": action})
            for action in BULK_ACTIONS
        },
    )


async def _saga_context(console: Console, saga_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with console.db.connect() as conn:
        saga = await queries.get_saga(conn, saga_id)
        if saga is None:
            raise HTTPException(404, f"no saga {saga_id!r}")
        steps = await queries.saga_step_rows(conn, saga_id)
        timer_rows = await queries.saga_timer_rows(conn, saga_id)
        outbox_rows = await queries.saga_outbox_rows(conn, saga_id)
        audit = await queries.audit_rows(conn, operator_actions, saga_id)
    finished = saga["status"] in queries.FINISHED
    tracks = (saga.get("state") or {}).get("steps") or {}
    awaiting = {
        (name, kind)
        for name, pair in tracks.items()
        for kind in ("forward", "compensation")
        if ((pair or {}).get(kind) or {}).get("status") == "awaiting"
    }
    timeline = build_timeline(
        steps,
        awaiting=awaiting,
        saga_created_at=saga["created_at"],
        now=now,
        finished=finished,
        saga_updated_at=saga["updated_at"],
    )
    state = saga.get("state") or {}
    step_names = list((state.get("steps") or {}).keys())
    return {
        "saga": saga,
        "timeline": timeline,
        "timers": timer_rows,
        "outbox_rows": outbox_rows,
        "audit": audit,
        "diagnosis": diagnose(saga, timeline.attempts, timer_rows, outbox_rows, now),
        "finished": finished,
        "step_names": step_names,
        "step_states": {name: (state.get("steps") or {}).get(name, {}) for name in step_names},
    }


async def saga_detail(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    context = await _saga_context(console, request.path_params["saga_id"])
    return console.render(request, "saga.html", **context)


async def saga_panel(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    context = await _saga_context(console, request.path_params["saga_id"])
    return console.render(request, "_saga_panel.html", **context)


# ---------------------------------------------------------------- actions on one saga


def _action(request: Request) -> str:
    action = request.path_params["action"]
    if action not in ACTION_LABELS:
        raise HTTPException(404, f"no action {action!r}")
    return str(action)


async def action_confirm(request: Request) -> Response:
    require_operator(request)
    console = _console(request)
    action = _action(request)
    saga_id = request.path_params["saga_id"]
    async with console.db.connect() as conn:
        saga = await queries.get_saga(conn, saga_id)
    if saga is None:
        raise HTTPException(404, f"no saga {saga_id!r}")
    step = request.query_params.get("step") or saga.get("current_step") or ""
    state = saga.get("state") or {}
    return console.render(
        request,
        "confirm_action.html",
        saga=saga,
        action=action,
        step=step,
        step_names=list((state.get("steps") or {}).keys()),
        result_text=request.query_params.get("result", "{}"),
    )


def _parse_result(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidAction(f"the result is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidAction('the result must be a JSON object, e.g. {"reserved": true}')
    return value


async def _apply(
    console: Console,
    saga_id: str,
    action: str,
    actor: str,
    step: str | None,
    result: dict[str, Any] | None,
    reason: str | None,
) -> None:
    assert console.registry is not None
    for attempt in range(3):
        try:
            await apply_action(
                console.db,
                console.registry,
                console.topics,
                saga_id,
                action,
                actor=actor,
                step=step or None,
                result=result,
                reason=reason,
            )
            return
        except SagaConflict:
            # The saga moved while we acted (a reply arrived): act on its new state.
            if attempt == 2:
                raise


async def action_apply(request: Request) -> Response:
    user = require_operator(request)
    console = _console(request)
    form = await request.form()
    check_csrf(request, form)
    action = _action(request)
    saga_id = request.path_params["saga_id"]
    step = str(form.get("step", "")) or None
    reason = str(form.get("reason", "")) or None
    try:
        result = _parse_result(str(form.get("result", ""))) if action == "skip" else None
        await _apply(console, saga_id, action, user.name, step, result, reason)
    except SagaNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (InvalidAction, ActionRejected, SagaConflict) as exc:
        async with console.db.connect() as conn:
            saga = await queries.get_saga(conn, saga_id)
        if saga is None:
            raise HTTPException(404, f"no saga {saga_id!r}") from exc
        state = saga.get("state") or {}
        return console.render(
            request,
            "confirm_action.html",
            status_code=422 if isinstance(exc, InvalidAction) else 409,
            saga=saga,
            action=action,
            step=step or "",
            error=str(exc),
            step_names=list((state.get("steps") or {}).keys()),
            result_text=str(form.get("result", "{}")),
        )
    log.info("console: %s applied %s to saga %s", user.name, action, saga_id)
    return RedirectResponse(_link(request, "saga_detail", {"done": action}, saga_id=saga_id), 303)


# ---------------------------------------------------------------- bulk actions


def _bulk_action(value: str | None) -> str:
    if value not in BULK_ACTIONS:
        raise HTTPException(400, f"bulk action must be one of {', '.join(BULK_ACTIONS)}")
    return value


def _bulk_targets(action: str, filters: queries.SagaFilter) -> queries.SagaFilter | None:
    """The sagas a bulk action acts on: abort only ever touches running sagas (a filter on
    another status matches none), so the count confirmed is the set acted on."""
    if action != "abort":
        return filters
    if filters.status not in ("", "running"):
        return None
    return dataclasses.replace(filters, status="running")


async def bulk_confirm(request: Request) -> Response:
    require_operator(request)
    console = _console(request)
    action = _bulk_action(request.query_params.get("action"))
    filters = queries.SagaFilter.from_params(request.query_params)
    limit = console.config.bulk_limit
    targets = _bulk_targets(action, filters)
    count = 0
    if targets is not None:
        async with console.db.connect() as conn:
            count = await queries.count_sagas(conn, targets, limit=limit)
    return console.render(
        request,
        "confirm_bulk.html",
        action=action,
        filters=filters,
        count=count,
        limit=limit,
        ages=queries.AGE_LABELS,
    )


async def bulk_apply(request: Request) -> Response:
    user = require_operator(request)
    console = _console(request)
    form = await request.form()
    check_csrf(request, form)
    action = _bulk_action(str(form.get("action", "")))
    filters = queries.SagaFilter.from_params({k: str(v) for k, v in form.items()})
    effective = _bulk_targets(action, filters)
    targets: list[dict[str, Any]] = []
    if effective is not None:
        async with console.db.connect() as conn:
            targets = await queries.matching_sagas(conn, effective, limit=console.config.bulk_limit)
    applied, refused = 0, []
    for target in targets:
        step = target["current_step"] if action == "retry" else None
        try:
            await _apply(console, target["id"], action, user.name, step, None, None)
            applied += 1
        except (InvalidAction, ActionRejected, SagaConflict, SagaNotFound) as exc:
            refused.append((target["id"], str(exc)))
    log.info(
        "console: %s bulk %s: %d applied, %d refused", user.name, action, applied, len(refused)
    )
    return console.render(
        request,
        "bulk_done.html",
        action=action,
        applied=applied,
        refused=refused,
        back=_link(request, "saga_list", filters.params()),
    )


# ---------------------------------------------------------------- dead letters


async def dead_letter_list(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    status = request.query_params.get("status", "new")
    if status not in ("new", "replayed", "discarded"):
        raise HTTPException(400, "status must be new, replayed or discarded")
    before_raw = request.query_params.get("before")
    try:
        before = int(before_raw) if before_raw else None
    except ValueError as exc:
        raise HTTPException(400, "before must be a dead letter id") from exc
    size = console.config.page_size
    async with console.db.connect() as conn:
        rows = await queries.list_dead_letters(
            conn, status=status, before_id=before, limit=size + 1
        )
        counts = await queries.dead_letter_counts(conn)
    more = len(rows) > size
    rows = rows[:size]
    return console.render(
        request,
        "dead_letters.html",
        rows=rows,
        status=status,
        counts=counts,
        older_link=_link(
            request, "dead_letter_list", {"status": status, "before": str(rows[-1]["id"])}
        )
        if more
        else None,
    )


def _letter_id(request: Request) -> int:
    return int(request.path_params["letter_id"])


async def dead_letter_detail(request: Request) -> Response:
    require_user(request)
    console = _console(request)
    async with console.db.connect() as conn:
        letter = await queries.get_dead_letter(conn, _letter_id(request))
    if letter is None:
        raise HTTPException(404, "no such dead letter")
    try:
        value = orjson.loads(letter["value_text"])
    except orjson.JSONDecodeError:
        value = None
    return console.render(request, "dead_letter.html", letter=letter, value=value)


async def dead_letter_act(request: Request) -> Response:
    user = require_operator(request)
    console = _console(request)
    form = await request.form()
    check_csrf(request, form)
    letter_id = _letter_id(request)
    action = request.path_params["action"]
    try:
        if action == "replay":
            if console.transport is None:
                raise HTTPException(503, "the broker is not connected yet; try again")
            await replay(console.db, console.transport, letter_id, user.name)
        elif action == "discard":
            await discard(console.db, letter_id, user.name)
        else:
            raise HTTPException(404, f"no action {action!r}")
    except DeadLetterNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except DeadLetterResolved as exc:
        raise HTTPException(409, str(exc)) from exc
    except TransportError as exc:
        raise HTTPException(503, f"the broker refused the replay: {exc}") from exc
    return RedirectResponse(_link(request, "dead_letter_detail", letter_id=letter_id), 303)


# ---------------------------------------------------------------- errors


def _error_page(request: Request, status: int, message: str) -> Response:
    console = _console(request)
    return console.render(request, "error.html", status_code=status, status=status, message=message)


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    target = _link(request, "login_form", {"next": request.url.path})
    if request.headers.get("HX-Request"):
        # htmx would swap the login form into a panel: send the whole page there instead.
        return Response(status_code=401, headers={"HX-Redirect": target})
    if request.method != "GET":
        return _error_page(request, 401, "Your session has ended: log in again.")
    return RedirectResponse(target, 303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, str(exc))


async def _csrf(request: Request, exc: Exception) -> Response:
    return _error_page(request, 403, f"Refused: {exc}. Reload the page and submit the form again.")


async def _bad_filter(request: Request, exc: Exception) -> Response:
    return _error_page(request, 400, str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, str(exc.detail))


# ---------------------------------------------------------------- the app


@contextlib.asynccontextmanager
async def console_lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the console's sources and background tasks, and stop them. It is the app's own
    lifespan; a host that mounts the console (Starlette does not run a mounted app's lifespan)
    enters it from its own: `async with console_lifespan(console_app): yield`."""
    console: Console = app.state.console
    await console.start()
    try:
        yield
    finally:
        await console.stop()


def create_console_app(
    settings: Settings,
    *,
    registry: SagaRegistry | None = None,
    transport: Transport | None = None,
    orchestrator_engine: AsyncEngine | None = None,
    background: bool = True,
) -> Starlette:
    """The console as a Starlette app, to serve alone (`sagaway console`) or mount (`/console`).

    `registry` (default: the settings' saga modules) is needed to act on sagas; `transport` (a
    started one, owned by the caller) to collect and replay dead letters — without it the app
    connects its own. `orchestrator_engine` shares a process's engine; `background=False` skips
    the lag sampler and the dead-letter collector (tests)."""
    console = Console(
        settings,
        registry=registry,
        transport=transport,
        orchestrator_engine=orchestrator_engine,
        background=background,
    )
    secret = (
        console.config.session_secret.get_secret_value()
        if console.config.session_secret
        else secrets.token_urlsafe(32)
    )
    if console.config.session_secret is None:
        log.warning("console.session_secret is not set: sessions end when the console restarts")

    routes = [
        Route("/", overview, name="overview"),
        Route("/overview/panel", overview_panel, name="overview_panel"),
        Route("/login", login_form, methods=["GET"], name="login_form"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/sagas", saga_list, name="saga_list"),
        Route("/sagas/bulk", bulk_confirm, methods=["GET"], name="bulk_confirm"),
        Route("/sagas/bulk", bulk_apply, methods=["POST"], name="bulk_apply"),
        Route("/sagas/{saga_id}", saga_detail, name="saga_detail"),
        Route("/sagas/{saga_id}/panel", saga_panel, name="saga_panel"),
        Route(
            "/sagas/{saga_id}/actions/{action}",
            action_confirm,
            methods=["GET"],
            name="action_confirm",
        ),
        Route(
            "/sagas/{saga_id}/actions/{action}",
            action_apply,
            methods=["POST"],
            name="action_apply",
        ),
        Route("/dead-letters", dead_letter_list, name="dead_letter_list"),
        Route("/dead-letters/{letter_id:int}", dead_letter_detail, name="dead_letter_detail"),
        Route(
            "/dead-letters/{letter_id:int}/{action}",
            dead_letter_act,
            methods=["POST"],
            name="dead_letter_act",
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SessionMiddleware,  # type: ignore[arg-type]
                secret_key=secret,
                session_cookie=SESSION_COOKIE,
                max_age=console.config.session_max_age_s,
                same_site="strict",
                https_only=console.config.cookie_secure,
            )
        ],
        exception_handlers={
            NotAuthenticated: _not_authenticated,
            Forbidden: _forbidden,
            CsrfRefused: _csrf,
            queries.BadFilter: _bad_filter,
            HTTPException: _http,
        },
        lifespan=console_lifespan,
    )
    app.state.console = console
    app.state.users = console.users
    return app
