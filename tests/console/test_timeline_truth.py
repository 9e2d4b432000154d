"""A saga page that tells the truth (issue 19, item 3), in a real headless Chromium: an attempt
an operator's retry replaced ends where the retry replaced it and says so, operator actions are
drawn on the timeline with who and when, compensations that can never run say so instead of
"pending", the saga's total duration and each attempt's start are shown, and the saga's data is
a key/value table with the raw JSON one click away. Screenshots go to test-artifacts/console/."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from console.saga_data import MAX_DEPTH, data_view
from console.step_states import describe_steps
from console.timeline import build_timeline, clock
from orchestrator.models import operator_actions, saga_instances, saga_steps
from orchestrator.operator_actions import apply_action
from sagaway.messaging.topics import TopicNames
from tests.console import seeding
from tests.console.conftest import PASSWORDS, Seeded, console_app, console_settings
from tests.console.sagas import CHARGE, HOLD, ISSUE, book_trip
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


def seconds_text(value: float) -> str:
    """As the console's `seconds` filter words a duration."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def on_the_side(seeded: Seeded, read: Any) -> Any:
    """`seeded.run(read)` on a thread of its own: Playwright's loop runs in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(seeded.run, read).result()


def rows_of(seeded: Seeded, table: sa.Table, saga_id: str) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            query = sa.select(table).where(table.c.saga_id == saga_id).order_by(table.c.id)
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    return list(on_the_side(seeded, read))


def saga_row(seeded: Seeded, saga_id: str) -> dict[str, Any]:
    async def read(engine: AsyncEngine) -> dict[str, Any]:
        async with engine.connect() as conn:
            query = sa.select(saga_instances).where(saga_instances.c.id == saga_id)
            return dict((await conn.execute(query)).mappings().one())

    return dict(on_the_side(seeded, read))


def sent_at(steps: list[dict[str, Any]], step: str, attempt: int) -> datetime:
    wanted = (step, "forward", attempt, "sent")
    [row] = [r for r in steps if (r["step_name"], r["kind"], r["attempt"], r["status"]) == wanted]
    return row["sent_at"]  # type: ignore[no-any-return]


# -- the pure parts ------------------------------------------------------------------------------

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sent(step: str, attempt: int, seconds: float) -> dict[str, Any]:
    return {"step_name": step, "kind": "forward", "status": "sent", "attempt": attempt,
            "command_message_id": f"m-{step}", "sent_at": at(seconds)}


def test_a_retry_ends_the_try_it_replaced_and_is_listed_before_the_try_it_sent() -> None:
    rows = [sent("pay", 1, 1.0), sent("pay", 2, 300.0)]
    audit = [{"created_at": at(300.02), "actor": "olga", "action": "retry", "step": "pay",
              "outcome": "applied", "detail": "saga is running"}]
    for now in (at(400.0), at(4000.0)):  # however long after, the replaced try took 299 s
        timeline = build_timeline(rows, saga_created_at=T0, now=now, finished=False,
                                  awaiting={("pay", "forward")}, audit=audit)
        first, second = timeline.attempts
        assert (first.status, first.replaced_by, first.ended_at) == ("replaced", 2, at(300.0))
        assert first.duration_s(now) == 299.0 and first.label == "replaced by olga's retry"
        assert second.in_flight and second.offset_s == 300.0
        assert [getattr(e, "attempt", "retry") for e in timeline.entries] == [1, "retry", 2]
    [mark] = timeline.marks
    assert mark.label == "retry pay by olga" and mark.offset_pct == pytest.approx(7.5, abs=0.01)
    # A retry a moment after the try it replaces still stands between the two.
    quick = build_timeline([sent("pay", 1, 299.9), sent("pay", 2, 300.0)], saga_created_at=T0,
                           now=at(301.0), finished=False, awaiting={("pay", "forward")},
                           audit=audit)
    assert [getattr(e, "attempt", "retry") for e in quick.entries] == [1, "retry", 2]
    # So does a retry of a try that had timed out (waiting for its backoff): it ended itself.
    timed_out = {**sent("pay", 1, 1.0), "status": "timed_out", "sent_at": None,
                 "replied_at": at(31.0)}
    backoff = build_timeline([sent("pay", 1, 1.0), timed_out, sent("pay", 2, 300.0)],
                             saga_created_at=T0, now=at(301.0), finished=False,
                             awaiting={("pay", "forward")}, audit=audit)
    assert [getattr(e, "attempt", "retry") for e in backoff.entries] == [1, "retry", 2]
    assert backoff.attempts[0].label == "timed out" and backoff.attempts[1].sent_by is not None
    # Without an operator's retry on record, the replacement is still named, by its try.
    alone = build_timeline(rows, saga_created_at=T0, now=at(400.0), finished=False,
                           awaiting={("pay", "forward")})
    assert alone.attempts[0].label == "replaced by try 2"


def test_step_states_before_and_after_the_pivot_while_running_and_compensating() -> None:
    def saga(status: str, pivot_passed: bool, **tracks: tuple[str, str]) -> dict[str, Any]:
        steps = {name: {"forward": {"status": f, "attempt": 1}, "compensation": {"status": c}}
                 for name, (f, c) in tracks.items()}
        return {"status": status, "state": {"pivot_passed": pivot_passed, "steps": steps}}

    def texts(row: dict[str, Any]) -> list[str]:
        return [r.compensation for r in describe_steps(row, book_trip)]

    running = saga("running", False, **{HOLD: ("succeeded", "pending"),
                                         CHARGE: ("awaiting", "pending"),
                                         ISSUE: ("pending", "pending")})
    assert texts(running) == [
        "not needed yet: runs only if the saga fails",
        "not needed yet: runs only if the saga fails",
        "will not compensate: the pivot, no return after it",
    ]
    compensating = saga("compensating", False, **{HOLD: ("succeeded", "pending"),
                                                   CHARGE: ("failed", "pending"),
                                                   ISSUE: ("pending", "pending")})
    assert texts(compensating)[:2] == [
        "queued: after the later steps' compensations",
        "will not compensate: the step failed, nothing to undo",
    ]
    # Without the definition (its version not loaded here), the saga's state still tells.
    assert [r.compensation for r in describe_steps(saga(
        "running", True, a=("succeeded", "pending")), None)] == [
        "will not compensate: the pivot has succeeded"]


def test_the_data_view_flattens_nesting_and_stops_at_its_depth_limit() -> None:
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH + 2):
        deep = {"d": deep}
    view = data_view({"a": [], "b": {"c": [1, {"e": False}]}, "deep": deep})
    rows = {f.path: (f.depth, f.value, f.summary) for f in view.fields}
    assert rows["a"] == (0, None, "empty")
    assert rows["b.c"] == (1, None, "2 items")
    assert rows["b.c[1].e"] == (3, "false", "")
    cut = [f for f in view.fields if f.kind == "more"]
    assert len(cut) == 1 and cut[0].depth == MAX_DEPTH and '"bottom"' in (cut[0].value or "")
    assert data_view("just text").scalar is not None and data_view(None).fields == []


# -- through the page ---------------------------------------------------------------------------


def test_an_attempt_given_up_by_an_abort_ends_at_the_abort(
    operator: TestClient, seeded: Seeded
) -> None:
    async def abort(engine: AsyncEngine) -> None:
        await apply_action(
            engine, seeding.REGISTRY, TopicNames(""), seeded.waiting, "abort", actor="olga"
        )

    seeded.run(abort)
    html = operator.get(f"/sagas/{seeded.waiting}").text
    [action] = rows_of(seeded, operator_actions, seeded.waiting)
    assert "no reply: given up at olga&#39;s abort" in html
    assert f"Given up at {clock(action['created_at'])} UTC when olga applied abort." in html
    assert "abort by olga" in html


# -- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def served(seeded: Seeded) -> Iterator[str]:
    """The console over HTTP on a loopback port (uvicorn in a thread), cookies not Secure."""
    settings = console_settings(seeded.settings.storage.data_dir, cookie_secure=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        console_app(settings), host="127.0.0.1", port=port, log_level="warning",
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        eventually_sync(lambda: server.started, timeout_s=20, what="the console to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def page(served: str) -> Iterator[Any]:
    """Olga (an operator), logged in; the test fails if the CSP blocked anything."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: blocked.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(f"{served}/login")
            page.fill("input[name=username]", "olga")
            page.fill("input[name=password]", PASSWORDS["olga"])
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")
            yield page
        finally:
            browser.close()
    assert blocked == [], blocked


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_retried_attempt_ends_at_the_operators_retry_which_is_drawn_with_who_and_when(
    page: Any, served: str, seeded: Seeded
) -> None:
    saga_id = seeded.waiting  # awaiting the reply to charge-card, try 1
    page.goto(f"{served}/sagas/{saga_id}")
    page.click(f"#actions a:has-text('Retry {CHARGE} now')")
    page.click("#confirm")
    page.wait_for_selector(f"#timeline tr.attempt[data-step='{CHARGE}'][data-try='2']")
    page.reload()  # a moment later: nothing about the replaced try may have grown
    steps = rows_of(seeded, saga_steps, saga_id)
    [retry] = rows_of(seeded, operator_actions, saga_id)
    assert (retry["action"], retry["actor"], retry["outcome"]) == ("retry", "olga", "applied")
    first, second = sent_at(steps, CHARGE, 1), sent_at(steps, CHARGE, 2)

    replaced = page.locator(f"#timeline tr.attempt[data-step='{CHARGE}'][data-try='1']")
    assert replaced.locator(".status").inner_text() == "replaced by olga's retry"
    # It took until the retry replaced it: not "until now".
    assert replaced.locator("td.took").inner_text() == seconds_text(
        (second - first).total_seconds()
    )
    assert replaced.locator("td.started").inner_text().startswith(clock(first))
    detail = page.locator(f"#timeline tr.attempt[data-step='{CHARGE}'][data-try='1'] + tr.detail")
    detail.locator("summary").click()
    assert detail.locator(".end-note").inner_text() == (
        f"Ended at {clock(second)} UTC, replaced by try 2 (olga's retry);"
        " a reply to this try would be ignored."
    )
    current = page.locator(f"#timeline tr.attempt[data-step='{CHARGE}'][data-try='2']")
    assert current.locator(".status").inner_text() == "awaiting reply"

    # The retry is a row of its own, with who and when, and a line across every track.
    action = page.locator("#timeline tr.operator-action")
    assert action.count() == 1
    assert action.locator(".status").inner_text() == f"retry {CHARGE} by olga"
    assert action.locator("td.mono").inner_text() == clock(retry["created_at"])
    lines = page.locator("#timeline tr.attempt line.op-line")
    assert lines.count() == 3  # hold-seat, charge-card try 1, try 2

    # The replaced try's bar stops where the retry's mark stands.
    bar = replaced.locator("rect.bar").bounding_box()
    mark = action.locator("line.op-mark").bounding_box()
    assert bar is not None and mark is not None
    assert abs(bar["x"] + bar["width"] - (mark["x"] + mark["width"] / 2)) < 6, (bar, mark)
    # ...and the rows come in the order things happened: try 1, the retry, try 2.
    order = page.locator("#timeline tbody > tr:not(.detail)").evaluate_all(
        "rows => rows.map(r => r.dataset.try ? r.dataset.step + '#' + r.dataset.try"
        " : 'op:' + r.dataset.action)"
    )
    assert order == [f"{HOLD}#1", f"{CHARGE}#1", "op:retry", f"{CHARGE}#2"], order
    shot(page, "timeline-retried")


def test_a_finished_sagas_step_states_say_which_compensations_will_never_run(
    page: Any, served: str, seeded: Seeded
) -> None:
    page.goto(f"{served}/sagas/{seeded.completed}")
    states = page.locator("#step-states")
    compensations = states.locator("td.compensation").all_inner_texts()
    assert compensations == [
        "will not compensate: the saga completed",
        "will not compensate: the saga completed",
        "will not compensate: the pivot, no return after it",
    ]
    assert "pending" not in states.inner_text()
    saga = saga_row(seeded, seeded.completed)
    took = (saga["updated_at"] - saga["created_at"]).total_seconds()
    assert page.locator("#saga-duration").inner_text().startswith(
        f"{seconds_text(took)} (completed at"
    )
    steps = rows_of(seeded, saga_steps, seeded.completed)
    started = page.locator(f"#timeline tr.attempt[data-step='{ISSUE}'] td.started").inner_text()
    assert started.startswith(clock(sent_at(steps, ISSUE, 1)))
    shot(page, "timeline-completed")

    page.goto(f"{served}/sagas/{seeded.compensated}")
    compensations = page.locator("#step-states td.compensation").all_inner_texts()
    assert compensations == [
        "succeeded (try 1)",
        "will not compensate: the step failed, nothing to undo",
        "will not compensate: the pivot, no return after it",
    ]
    forwards = page.locator("#step-states tr td:nth-child(2)").all_inner_texts()
    assert forwards == ["succeeded (try 1)", "failed (try 1)", "not run"]


def test_the_saga_data_is_a_key_value_view_with_the_raw_json_one_click_away(
    page: Any, served: str, seeded: Seeded
) -> None:
    async def nested(engine: AsyncEngine) -> str:
        saga_id = await seeding.start(engine)
        await seeding.reply(engine, saga_id, HOLD, "success", {
            "hold_id": "h-7",
            "seat_map": {"row": 12, "letters": ["A", "B"], "window": True},
            "note": None,
        })
        return saga_id

    saga_id = on_the_side(seeded, nested)
    page.goto(f"{served}/sagas/{saga_id}")
    view = page.locator("#saga-data-view")

    def value(path: str) -> str:
        return str(view.locator(f"tr[data-path='{path}'] td").inner_text())

    assert value("traveller") == "t-1"
    assert value("price_cents") == "1200"
    assert value("seat_map") == "object, 3 fields"
    assert value("seat_map.row") == "12"
    assert value("seat_map.letters") == "list, 2 items"
    assert value("seat_map.letters[1]") == "B"
    assert value("seat_map.window") == "true"
    assert value("note") == "null"
    # Nested keys stand indented under their parent.
    top = view.locator("tr[data-path='seat_map'] th").bounding_box()
    inner = view.locator("tr[data-path='seat_map.letters[1]'] th").bounding_box()
    key_x = view.locator("tr[data-path='seat_map.letters[1]'] th").evaluate(
        "th => parseFloat(getComputedStyle(th).paddingLeft)"
    )
    assert top is not None and inner is not None and key_x > 30
    raw = page.locator("#saga-data")
    assert not raw.is_visible()
    page.click("#saga-data-raw summary")
    assert raw.is_visible()
    assert json.loads(raw.inner_text()) == saga_row(seeded, saga_id)["data"]
    shot(page, "saga-data")
