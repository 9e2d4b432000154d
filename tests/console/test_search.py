"""Search by what operators see, on SQLite and PostgreSQL: the 8-character short id every table
shows, a correlation id, a business key a saga declares (place-order's `customer_id`, stored by
the engine when the saga starts); the listing's duration column, its sorts and its capped count.
The short-id search is also driven in Chromium."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from examples.place_order.saga import place_order
from orchestrator.models import saga_instances, saga_search_keys
from orchestrator.registry import SagaRegistry
from orchestrator.session import SagaSession
from sagaway.messaging.topics import TopicNames
from tests.console.conftest import Seeded
from tests.console.test_layout import browser as browser  # noqa: F401 (a fixture)
from tests.console.test_layout import browser_only, logged_in_page
from tests.console.test_layout import console_url as console_url  # noqa: F401 (a fixture)

ORDERS = SagaRegistry([place_order])
ROW = re.compile(r'data-saga-id="([^"]+)"')
SHORT_ID = re.compile(r'class="mono">([^<]+)</a>')


async def start_order(engine: AsyncEngine, customer_id: str) -> str:
    """A place-order saga started by the engine, as the orchestrator starts one."""
    saga_id = str(uuid.uuid4())
    body = {
        "customer_id": customer_id,
        "items": [{"sku": "sku-1", "quantity": 1}],
        "total_cents": 1500,
        "country": "FR",
    }
    async with engine.begin() as conn:
        session = SagaSession(conn, ORDERS, TopicNames(""))
        session.start(
            saga_id, f"order-{saga_id}", "place-order", body,
            reply_to="gateway.replies", reply_mode="async", principal="shop", origin={},
        )  # fmt: skip
        await session.flush()
    return saga_id


def listed(client: TestClient, query: str) -> tuple[list[str], str]:
    page = client.get(f"/sagas?{query}")
    assert page.status_code == 200, page.text
    return ROW.findall(page.text), page.text


def count_line(html: str) -> str:
    match = re.search(r'<p class="muted" id="saga-count">([^<]+)</p>', html)
    assert match, "no count line on the page"
    return match.group(1)


def test_the_short_id_shown_in_the_table_finds_its_saga(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    client = make_any_client("vera")
    ids, html = listed(client, "")
    shown = dict(zip(SHORT_ID.findall(html), ids, strict=True))
    short = next(s for s, full in shown.items() if full == any_seeded.waiting)
    assert len(short) == 8

    found, html = listed(client, f"q={short}")
    assert found == [any_seeded.waiting]
    assert count_line(html) == "1 saga matches."
    assert listed(client, f"q={any_seeded.waiting[:12]}")[0] == [any_seeded.waiting]
    # Fewer than 8 characters match an id only whole.
    assert listed(client, f"q={short[:7]}")[0] == []


def test_a_customer_id_and_a_correlation_id_find_their_sagas(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    first = any_seeded.run(lambda engine: start_order(engine, "cust-4711"))
    second = any_seeded.run(lambda engine: start_order(engine, "cust-4711"))
    other = any_seeded.run(lambda engine: start_order(engine, "cust-0815"))
    client = make_any_client("vera")

    found, html = listed(client, "q=cust-4711")
    assert found == [second, first]
    assert count_line(html) == "2 sagas match."
    assert listed(client, "q=cust-0815")[0] == [other]
    assert listed(client, f"q=order-{first}")[0] == [first]
    # Searched within the other filters.
    assert listed(client, "q=cust-4711&status=completed")[0] == []

    async def stored(engine: AsyncEngine) -> list[tuple[str, str]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(saga_search_keys.c.name, saga_search_keys.c.value).where(
                    saga_search_keys.c.saga_id == first
                )
            )
            return [tuple(r) for r in rows]

    assert any_seeded.run(stored) == [("customer_id", "cust-4711")]


async def _set_times(engine: AsyncEngine, times: dict[str, tuple[datetime, datetime]]) -> None:
    async with engine.begin() as conn:
        for saga_id, (created, updated) in times.items():
            await conn.execute(
                sa.update(saga_instances)
                .where(saga_instances.c.id == saga_id)
                .values(created_at=created, updated_at=updated)
            )


def test_sagas_sort_by_duration_and_age_with_a_duration_column(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    s = any_seeded
    now = datetime.now(UTC)
    # Finished sagas last (updated - created); the running one has run for 2 h so far.
    times = {
        s.completed: (now - timedelta(minutes=10), now - timedelta(minutes=10, seconds=-3)),
        s.compensated: (now - timedelta(minutes=20), now - timedelta(minutes=15)),
        s.failed: (now - timedelta(minutes=30), now - timedelta(minutes=30, milliseconds=-250)),
        s.waiting: (now - timedelta(hours=2), now - timedelta(hours=1)),
    }
    s.run(lambda engine: _set_times(engine, times))
    client = make_any_client("vera", page_size=2)

    def walk(sort: str) -> list[str]:
        seen: list[str] = []
        url = f"/sagas?sort={sort}"
        while url:
            page = client.get(url)
            assert page.status_code == 200
            seen += ROW.findall(page.text)
            nxt = re.search(r'href="([^"]+)" rel="next"', page.text)
            url = nxt.group(1).replace("&amp;", "&") if nxt else ""
        # "Previous" from the last page leads back to the page before it.
        prev = re.search(r'href="([^"]+)" rel="prev"', page.text)
        assert prev is not None
        assert ROW.findall(client.get(prev.group(1).replace("&amp;", "&")).text) == seen[-4:-2]
        return seen

    longest = [s.waiting, s.compensated, s.completed, s.failed]
    assert walk("longest") == longest
    assert walk("shortest") == longest[::-1]
    assert walk("oldest") == [s.waiting, s.failed, s.compensated, s.completed]
    assert walk("newest") == [s.completed, s.compensated, s.failed, s.waiting]

    _, html = listed(client, "sort=longest")
    cells = re.findall(r'<td class="duration"[^>]*>(.*?)</td>', html)
    assert cells == ['2.0 h <span class="muted">so far</span>', "5.0 min"]
    _, html = listed(client, "sort=shortest")
    assert re.findall(r'<td class="duration"[^>]*>(.*?)</td>', html) == ["250 ms", "3.0 s"]
    assert client.get("/sagas?sort=slowest").status_code == 400


async def _many_sagas(engine: AsyncEngine, count: int) -> None:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": f"bulk-{i:06d}", "saga_type": "book-trip", "definition_version": 1,
            "status": "completed", "current_step": None, "data": {}, "state": {},
            "correlation_id": f"bulk-corr-{i}", "principal": "loader",
            "created_at": now - timedelta(seconds=count - i), "updated_at": now, "version": 1,
        }  # fmt: skip
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(saga_instances.insert(), rows)


def test_the_total_count_is_capped_past_ten_thousand(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    client = make_any_client("vera")
    _, html = listed(client, "")
    assert count_line(html) == "4 sagas match."

    any_seeded.run(lambda engine: _many_sagas(engine, 10_000))
    _, html = listed(client, "")
    assert count_line(html) == "More than 10,000 sagas match."
    _, html = listed(client, "sort=longest")
    assert count_line(html) == (
        "More than 10,000 sagas match; sorted by duration: the newest 10,000."
    )
    _, html = listed(client, "status=running")
    assert count_line(html) == "1 saga matches."


@pytest.fixture
def customer_order(seeded: Seeded) -> str:
    """A place-order saga for customer `cust-browser-1` (seeded before Chromium starts: the
    Playwright sync API keeps an event loop running)."""
    return seeded.run(lambda engine: start_order(engine, "cust-browser-1"))  # type: ignore[no-any-return]


@browser_only
def test_searching_the_short_id_in_chromium_finds_the_saga(
    customer_order: str, browser: Any, console_url: str, seeded: Seeded
) -> None:
    customer = customer_order
    page = logged_in_page(browser, console_url)
    page.goto(console_url + "/sagas")
    row = page.locator(f'tr[data-saga-id="{seeded.waiting}"]')
    short = row.locator("a.mono").inner_text().strip()
    assert len(short) == 8 and seeded.waiting.startswith(short)

    page.fill("input[name=q]", short)
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("#saga-count:has-text('1 saga matches')")
    assert page.locator("#sagas tbody tr[data-saga-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.sagaId)"
    ) == [seeded.waiting]

    page.fill("input[name=q]", "cust-browser-1")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector(f'tr[data-saga-id="{customer}"]')
    assert page.locator("#sagas tbody tr[data-saga-id]").count() == 1
    page.screenshot(path="/tmp/console-search-short-id.png", full_page=True)
    assert page.blocked == []
