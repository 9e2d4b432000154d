"""Bulk actions that show their targets: the confirmation lists the sagas (paged) and what it
skips and why; bulk retry, abort and resume; the POST answers 303 to a result page read back from
the audit log, so a reload (in Chromium too) or the same form sent twice repeats nothing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions
from sagaway.outbox.models import outbox
from tests.console import seeding
from tests.console.conftest import PASSWORDS, Seeded, console_app, console_settings, csrf_of
from tests.console.sagas import CHARGE
from tests.console.test_actions import audit_of, status_of
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path("test-artifacts/console")
FORM_FIELD = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def listed(html: str) -> list[str]:
    """The saga ids a confirmation page lists, in order."""
    table = html.split('id="bulk-targets"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'data-saga-id="([^"]+)"', table)


def form_of(html: str) -> dict[str, str]:
    """The confirmation form's hidden fields, as the browser would send them."""
    form = html.split('class="confirm"', 1)[1].split("</form>", 1)[0]
    return dict(FORM_FIELD.findall(form))


def bulk_rows(seeded: Seeded) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(operator_actions).where(operator_actions.c.target_kind == "bulk")
            )
            return [dict(r) for r in rows.mappings()]

    return list(seeded.run(read))


def sent_for(seeded: Seeded, saga_id: str) -> int:
    """How many messages the saga has put in the outbox (no relay runs in these tests)."""

    async def read(engine: AsyncEngine) -> int:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.key == saga_id)
            return int(await conn.scalar(query) or 0)

    return int(seeded.run(read))


def test_the_confirmation_lists_the_sagas_it_acts_on_page_by_page(
    make_client: Any, seeded: Seeded
) -> None:
    others = [seeded.run(seeding.waiting_at_charge) for _ in range(2)]
    client = make_client("olga", page_size=2)
    page = client.get("/sagas/bulk?action=abort")
    assert page.status_code == 200
    assert '<p class="count" id="bulk-count">3 sagas will be acted on.</p>' in page.text
    first = listed(page.text)
    assert first == [others[1], others[0]]  # newest first
    older = re.search(r'href="([^"]+)" rel="next" id="bulk-older"', page.text)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&"))
    assert listed(second.text) == [seeded.waiting]
    assert 'id="bulk-older"' not in second.text
    # What the filter matched but the action leaves alone, and why.
    skipped = page.text.split('id="bulk-skipped"', 1)[1].split("</p>", 1)[0]
    assert "only a running saga can be aborted" in skipped
    for status in ("completed", "compensated", "failed"):
        assert f'status-{status}">1 {status}</span>' in skipped
    assert status_of(seeded, seeded.waiting) == "running"  # confirming changed nothing


def test_bulk_abort_answers_303_and_a_reload_of_the_result_repeats_nothing(
    operator: TestClient, seeded: Seeded
) -> None:
    others = [seeded.run(seeding.waiting_at_charge) for _ in range(2)]
    page = operator.get("/sagas/bulk?action=abort&status=running")
    response = operator.post(
        "/sagas/bulk",
        data={"csrf_token": csrf_of(page.text), **form_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    target = response.headers["location"]
    assert re.fullmatch(r"/bulk/\d+", target)
    sent = {saga_id: sent_for(seeded, saga_id) for saga_id in [seeded.waiting, *others]}
    for _ in range(2):
        result = operator.get(target)
        assert result.status_code == 200
        assert "Applied to 3 sagas; refused for 0." in result.text
        assert result.text.count('class="status status-compensating">now compensating<') == 3
    for saga_id in [seeded.waiting, *others]:
        assert status_of(seeded, saga_id) == "compensating"
        assert [e["action"] for e in audit_of(seeded, saga_id)] == ["abort"]
        assert sent_for(seeded, saga_id) == sent[saga_id]
    [entry] = bulk_rows(seeded)
    assert (entry["action"], entry["actor"], entry["outcome"]) == ("bulk-abort", "olga", "applied")
    assert entry["saga_id"] is None
    assert status_of(seeded, seeded.completed) == "completed"


def test_the_same_confirmation_sent_twice_acts_once(operator: TestClient, seeded: Seeded) -> None:
    page = operator.get(f"/sagas/bulk?action=retry&q={seeded.waiting}")
    assert "1 saga will be acted on." in page.text
    data = {"csrf_token": csrf_of(page.text), **form_of(page.text)}
    first = operator.post("/sagas/bulk", data=data, follow_redirects=False)
    again = operator.post("/sagas/bulk", data=data, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    [entry] = audit_of(seeded, seeded.waiting)
    assert (entry["action"], entry["step"]) == ("retry", CHARGE)
    result = operator.get(first.headers["location"]).text
    assert f"retrying step {CHARGE}" in result


def test_a_bulk_post_without_its_confirmation_is_refused(
    operator: TestClient, seeded: Seeded
) -> None:
    token = csrf_of(operator.get("/sagas").text)
    response = operator.post("/sagas/bulk", data={"csrf_token": token, "action": "abort"})
    assert response.status_code == 400
    assert status_of(seeded, seeded.waiting) == "running"


def test_a_saga_started_after_the_confirmation_is_not_acted_on(
    operator: TestClient, seeded: Seeded
) -> None:
    page = operator.get("/sagas/bulk?action=abort")
    assert listed(page.text) == [seeded.waiting]
    late = seeded.run(seeding.waiting_at_charge)
    response = operator.post(
        "/sagas/bulk", data={"csrf_token": csrf_of(page.text), **form_of(page.text)}
    )
    assert "Applied to 1 saga; refused for 0." in response.text
    assert status_of(seeded, late) == "running" and audit_of(seeded, late) == []


def test_bulk_resume_resumes_failed_sagas_and_lists_the_ones_it_cannot(
    operator: TestClient, seeded: Seeded
) -> None:
    resumable = [seeded.run(seeding.failed_compensation) for _ in range(2)]
    assert 'href="/sagas/bulk?action=resume"' in operator.get("/sagas").text
    page = operator.get("/sagas/bulk?action=resume")
    assert sorted(listed(page.text)) == sorted([*resumable, seeded.failed])
    assert "only a failed saga can be resumed" in page.text
    result = operator.post(
        "/sagas/bulk", data={"csrf_token": csrf_of(page.text), **form_of(page.text)}
    ).text
    assert "Applied to 2 sagas; refused for 1." in result
    assert "the saga failed on arrival" in result  # seeded.failed never ran a step
    for saga_id in resumable:
        assert status_of(seeded, saga_id) == "compensating"
        assert [e["action"] for e in audit_of(seeded, saga_id)] == ["resume"]
    assert status_of(seeded, seeded.waiting) == "running"


def test_bulk_abort_on_a_status_that_cannot_be_aborted_offers_nothing(
    operator: TestClient, seeded: Seeded
) -> None:
    page = operator.get("/sagas/bulk?action=abort&status=completed")
    assert '<p class="count" id="bulk-count">0 sagas will be acted on.</p>' in page.text
    assert 'status-completed">1 completed</span>' in page.text
    assert re.search(r'<button type="submit" id="confirm"[^>]*disabled', page.text)
    assert status_of(seeded, seeded.completed) == "completed"


# -- in Chromium -------------------------------------------------------------------------------


@pytest.fixture
def console_url(seeded: Seeded) -> Iterator[str]:
    """The console over `seeded`'s databases, served by uvicorn on loopback (plain http)."""
    settings = console_settings(seeded.settings.storage.data_dir, cookie_secure=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(console_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        eventually_sync(lambda: server.started, timeout_s=20, what="the console to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def page(console_url: str) -> Iterator[Any]:
    """A logged-in operator's page in Debian's Chromium; CSP refusals collected on `.blocked`."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            tab: Any = browser.new_page(viewport={"width": 1300, "height": 900})
            tab.set_default_timeout(30_000)
            tab.blocked = []
            tab.on("console", lambda m: tab.blocked.append(m.text)
                   if "Content Security Policy" in m.text else None)
            tab.goto(f"{console_url}/login")
            tab.fill("input[name=username]", "olga")
            tab.fill("input[name=password]", PASSWORDS["olga"])
            tab.click("button[type=submit]")
            tab.wait_for_selector("h1:has-text('Overview')")
            yield tab
        finally:
            browser.close()


def off_loop(fn: Any, *args: Any) -> Any:
    """Call `fn` on a thread of its own: Playwright's sync API keeps an event loop running on
    this one, and the database helpers start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def shoot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_in_chromium_a_bulk_abort_lists_its_sagas_and_a_reload_repeats_nothing(
    page: Any, console_url: str, seeded: Seeded
) -> None:
    others = [off_loop(seeded.run, seeding.waiting_at_charge) for _ in range(2)]
    page.goto(f"{console_url}/sagas?status=running")
    page.click("text=Bulk abort…")
    page.wait_for_selector("#bulk-targets")
    shoot(page, "bulk-confirm.png")
    rows = page.locator("#bulk-targets tbody tr[data-saga-id]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.sagaId)")) == sorted(
        [seeded.waiting, *others]
    )
    assert page.locator("#bulk-count").inner_text() == "3 sagas will be acted on."
    page.click("#confirm")
    page.wait_for_selector("#bulk-result")
    assert re.search(r"/bulk/\d+$", page.url)
    sent = {saga_id: off_loop(sent_for, seeded, saga_id) for saga_id in [seeded.waiting, *others]}
    page.reload()
    page.wait_for_selector("#bulk-result")
    shoot(page, "bulk-result.png")
    assert page.locator("#bulk-result").inner_text() == "Applied to 3 sagas; refused for 0."
    colour = page.locator("#bulk-results .status").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert colour == "rgb(254, 243, 199)"  # .status-compensating
    [entry] = off_loop(bulk_rows, seeded)
    assert entry["action"] == "bulk-abort"
    for saga_id in [seeded.waiting, *others]:
        assert [e["action"] for e in off_loop(audit_of, seeded, saga_id)] == ["abort"]
        assert off_loop(sent_for, seeded, saga_id) == sent[saga_id]
    assert page.blocked == []


def test_in_chromium_an_abort_then_a_reload_records_one_action_and_sends_once(
    page: Any, console_url: str, seeded: Seeded
) -> None:
    before = off_loop(sent_for, seeded, seeded.waiting)
    page.goto(f"{console_url}/sagas/{seeded.waiting}")
    page.click("#abort")
    page.fill("input[name=reason]", "customer called")
    page.click("#confirm")
    page.wait_for_selector("#action-outcome")
    assert page.locator("#action-outcome").inner_text() == "now compensating"
    # The notice takes the colour of the outcome (amber: compensating), not a generic green.
    notice = page.locator("#action-done").evaluate("e => getComputedStyle(e).backgroundColor")
    assert notice == "rgb(255, 251, 235)"
    shoot(page, "abort-outcome.png")
    sent = off_loop(sent_for, seeded, seeded.waiting)
    assert sent > before  # the compensation was sent
    page.reload()
    page.wait_for_selector("#saga-status")
    assert page.locator("#action-outcome").count() == 0  # said once
    assert [e["action"] for e in off_loop(audit_of, seeded, seeded.waiting)] == ["abort"]
    assert off_loop(sent_for, seeded, seeded.waiting) == sent
    assert page.blocked == []


def test_bulk_abort_and_its_result_work_alike_on_sqlite_and_postgresql(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    client = make_any_client("olga", page_size=1)
    other = any_seeded.run(seeding.waiting_at_charge)
    page = client.get("/sagas/bulk?action=abort")
    assert "2 sagas will be acted on." in page.text and listed(page.text) == [other]
    assert 'status-completed">1 completed</span>' in page.text
    response = client.post(
        "/sagas/bulk",
        data={"csrf_token": csrf_of(page.text), **form_of(page.text)},
        follow_redirects=False,
    )
    result = client.get(response.headers["location"]).text
    assert "Applied to 2 sagas; refused for 0." in result
    audit = client.get("/audit?actor=olga&action=bulk-abort&since=2000-01-01T00:00").text
    assert response.headers["location"] in audit
    for saga_id in (any_seeded.waiting, other):
        assert [e["action"] for e in audit_of(any_seeded, saga_id)] == ["abort"]
