"""The system-wide audit page (/audit): every operator action — on sagas, dead letters, bulk
actions — newest first, filtered by operator, action and time, paged, linked from the navigation;
and migration 0035 refiling old dead-letter actions under their letter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions
from sagaway.storage.database import sync_url
from sagaway.storage.migrate import upgrade
from tests.console.conftest import Seeded, csrf_of
from tests.console.test_bulk_actions import console_url, off_loop, page, shoot

__all__ = ["console_url", "page"]  # the Chromium fixtures, shared with test_bulk_actions

DAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def add_actions(seeded: Seeded, rows: list[dict[str, Any]]) -> None:
    async def write(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            for row in rows:
                await conn.execute(operator_actions.insert().values(
                    step=None, params=None, outcome="applied", detail=None, **row
                ))

    seeded.run(write)


def listed(html: str) -> list[str]:
    """(actor, action) of each row on the audit page, newest first."""
    table = html.split('id="audit-log"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'data-action="([^"]+)">\s*<td>[^<]*</td>\s*<td>([^<]+)</td>', table)


@pytest.fixture
def history(seeded: Seeded) -> Seeded:
    """Actions by two operators on three days, one on a saga that exists, one on none."""
    add_actions(seeded, [
        {"saga_id": seeded.waiting, "action": "retry", "actor": "olga",
         "created_at": DAY - timedelta(days=2)},
        {"saga_id": None, "target_kind": "dead-letter", "target_id": "41",
         "action": "discard-dlq", "actor": "petra", "created_at": DAY - timedelta(days=1)},
        {"saga_id": "5aga-that-never-existed", "action": "abort", "actor": "petra",
         "created_at": DAY},
    ])
    return seeded


def test_the_audit_page_lists_every_action_newest_first_and_is_in_the_navigation(
    viewer: TestClient, history: Seeded
) -> None:
    assert 'href="/audit"' in viewer.get("/").text
    page = viewer.get("/audit")
    assert page.status_code == 200
    assert listed(page.text) == [("abort", "petra"), ("discard-dlq", "petra"), ("retry", "olga")]
    assert f'href="/sagas/{history.waiting}"' in page.text
    assert 'href="/dead-letters/41">dead letter #41</a>' in page.text
    # A saga id that names no saga is shown, not linked.
    assert "5aga-tha</span> <span class=\"muted\">(no such saga)" in page.text
    assert 'href="/sagas/5aga-that-never-existed"' not in page.text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=petra", [("abort", "petra"), ("discard-dlq", "petra")]),
        ("action=retry", [("retry", "olga")]),
        ("since=2026-11-29T00:00", [("abort", "petra"), ("discard-dlq", "petra")]),
        ("until=2026-11-29T12:00", [("retry", "olga")]),
        ("actor=petra&since=2026-11-29T00:00&until=2026-11-30T00:00", [("discard-dlq", "petra")]),
        ("actor=nobody", []),
    ],
)
def test_the_audit_page_filters_by_operator_action_and_time(
    viewer: TestClient, history: Seeded, query: str, expected: list[tuple[str, str]]
) -> None:
    page = viewer.get(f"/audit?{query}")
    assert page.status_code == 200
    assert listed(page.text) == expected


def test_the_audit_page_is_paged(make_client: Any, history: Seeded) -> None:
    client = make_client("vera", page_size=2)
    first = client.get("/audit").text
    assert listed(first) == [("abort", "petra"), ("discard-dlq", "petra")]
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert listed(second) == [("retry", "olga")]
    assert 'rel="next"' not in second


def test_an_action_taken_in_the_console_shows_on_the_audit_page(
    operator: TestClient, seeded: Seeded
) -> None:
    token = csrf_of(operator.get(f"/sagas/{seeded.waiting}/actions/abort").text)
    operator.post(f"/sagas/{seeded.waiting}/actions/abort", data={"csrf_token": token})
    page = operator.get("/audit?actor=olga&action=abort").text
    assert listed(page) == [("abort", "olga")]
    assert "saga is compensating" in page


@pytest.mark.parametrize("query", ["since=yesterday", "before=x", "until=2026-13-01T00:00"])
def test_a_bad_audit_filter_is_refused(viewer: TestClient, query: str) -> None:
    assert viewer.get(f"/audit?{query}").status_code == 400


def test_in_chromium_the_navigation_leads_to_the_audit_log_and_its_filter_works(
    page: Any, console_url: str, seeded: Seeded
) -> None:
    off_loop(add_actions, seeded, [
        {"saga_id": None, "target_kind": "dead-letter", "target_id": "41",
         "action": "discard-dlq", "actor": "petra", "created_at": DAY},
    ])
    page.goto(f"{console_url}/sagas/{seeded.waiting}")
    page.click("#abort")
    page.click("#confirm")
    page.wait_for_selector("#action-outcome")
    page.click("header nav >> text=Audit")
    page.wait_for_selector("#audit-log")
    actions = page.locator("#audit-log tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.action)"
    )
    assert actions == ["abort", "discard-dlq"]
    shoot(page, "audit.png")
    page.select_option("select[name=action]", "abort")
    page.fill("input[name=actor]", "olga")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_url("**/audit?*")
    assert page.locator("#audit-log tbody tr").count() == 1
    assert page.locator("#audit-log tbody tr a.mono").get_attribute("href") == (
        f"/sagas/{seeded.waiting}"
    )
    assert page.blocked == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_the_migration_files_old_dead_letter_actions_under_their_letter(
    empty_db_url: str,
) -> None:
    upgrade(empty_db_url, "0034_saga_search_keys")
    engine = sa.create_engine(sync_url(empty_db_url))
    old = sa.table(
        "operator_actions", sa.column("saga_id"), sa.column("action"), sa.column("params", sa.JSON),
        sa.column("actor"), sa.column("outcome"), sa.column("created_at", sa.DateTime),
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO saga_instances (id, correlation_id, saga_type, definition_version,"
                " status, data, state, version, created_at, updated_at)"
                " VALUES ('real-saga', 'c-1', 't', 1, 'running', '{}', '{}', 1, :now, :now)"
            ), {"now": DAY})
            conn.execute(old.insert(), [
                {"saga_id": "saga-9", "action": "replay-dlq", "params": {"dead_letter_id": 5},
                 "actor": "olga", "outcome": "applied", "created_at": DAY},
                {"saga_id": "real-saga", "action": "discard-dlq",
                 "params": {"dead_letter_id": 6}, "actor": "olga", "outcome": "applied",
                 "created_at": DAY},
                {"saga_id": "real-saga", "action": "abort", "params": None, "actor": "olga",
                 "outcome": "applied", "created_at": DAY},
            ])
        upgrade(empty_db_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT action, saga_id, target_kind, target_id FROM operator_actions ORDER BY id"
            )).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("replay-dlq", None, "dead-letter", "5"),
        ("discard-dlq", "real-saga", "dead-letter", "6"),
        ("abort", "real-saga", None, None),
    ]
