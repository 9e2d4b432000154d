"""The console in a real headless Chromium (Debian's, driven by Playwright) against the whole
system running as separate `sagaway` processes: log in, watch a saga started through the API
appear in flight and complete without a reload, open its timeline, and abort a saga held at a
step whose participant is stopped and watch it compensate. Screenshots go to
test-artifacts/console/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.auth import hash_password
from examples.place_order import EXAMPLE_NAMES
from examples.place_order.saga import place_order
from sagaway.settings import ConsoleSettings
from tests.harness.processes import run_sagaway
from tests.harness.stack import EXAMPLE_SERVICES, Servers, Stack, create_stack
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
# The example saga's steps, by the service each one calls (names belong to the example).
STEP_OF = {
    step.command.split(".", 1)[0]: step.name
    for element in place_order.elements
    for step in element.steps
}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
OPERATOR_PASSWORD = "browser-operator-pw"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


def order() -> dict[str, Any]:
    return {
        "customer_id": "c-1",
        "items": [{"sku": "sku-1", "quantity": 1}],
        "total_cents": 500,
        "country": "FR",
    }


def console_settings(port: int) -> ConsoleSettings:
    return ConsoleSettings.model_validate(
        {
            "users": [
                {
                    "name": "admin",
                    "role": "operator",
                    "password_hash": hash_password(OPERATOR_PASSWORD),
                },
            ],
            "port": port,
            "session_secret": "browser-test-secret",
            "cookie_secure": False,  # plain http on loopback
            "refresh_interval_s": 1.0,
            "sample_interval_s": 1.0,
        }
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    """The whole system as a user runs it on one machine: each role its own `sagaway` process
    on a shared data dir (embedded broker + SQLite files) — orchestrator, the three example
    participants, the gateway and the console — each logging to test-artifacts/console/logs."""
    gateway_port, console_port = free_port(), free_port()
    stack = create_stack(
        "embedded",
        tmp_path_factory.mktemp("system") / "data",
        Servers(sqlite_template=sqlite_template),
        (*EXAMPLE_SERVICES, "gateway"),
        sagas=["examples.place_order.saga"],
        gateway_port=gateway_port,
        gateway_internal_port=0,
        rate_limit_per_s=0,
        timer_poll_interval_ms=100,
        console=console_settings(console_port),
    )
    stack.processes.logs = ARTIFACTS / "logs"
    for old in stack.processes.logs.glob("*.log"):
        old.unlink()
    try:
        # As a user seeds it: Playwright's event loop runs in this thread, so no asyncio.run.
        env = stack.environment()
        run_sagaway(env, stack.data_dir, "seed", "--customers", "10", "--skus", "10")
        stack.start_role("orchestrator", "orchestrator", "--with-relay")
        for name in EXAMPLE_NAMES:
            stack.start_role(name, "participant", name)
        gateway = stack.start_role("gateway", "gateway", url=f"http://127.0.0.1:{gateway_port}")
        console = stack.start_role("console", "console", url=f"http://127.0.0.1:{console_port}")
        gateway.wait_ready(60, path="/healthz", ready=lambda status: status < 500)
        console.wait_ready(60, path="/login", ready=lambda status: status < 500)
        yield stack
    finally:
        stack.processes.stop_all()


def console_url(system: Stack) -> str:
    return system.processes["console"].url or ""


def post_saga(system: Stack, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{system.processes['gateway'].url}/api/v1/sagas/place-order",
        json=body,
        headers={"Prefer": "respond-async"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, system: Stack) -> None:
    page.goto(console_url(system) + "/")
    page.wait_for_url("**/login?next=*")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", OPERATOR_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")


@pytest.fixture
def page(browser: Any, system: Stack) -> Iterator[Any]:
    """A fresh page; the test fails if the console's Content-Security-Policy blocked anything
    on it (an inline script or style that htmx or a template still needed)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: blocked.append(message.text)
        if "Content Security Policy" in message.text
        else None,
    )
    try:
        yield page
    finally:
        context.close()
    assert blocked == [], blocked


def test_log_in_with_a_wrong_then_the_right_password_and_log_out(
    page: Any, system: Stack
) -> None:
    page.goto(console_url(system) + "/sagas")
    page.wait_for_url("**/login?next=*")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Wrong user name or password.")
    shot(page, "01-login-refused")
    page.fill("input[name=password]", OPERATOR_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/sagas")  # back to the page first asked for
    assert page.locator(".user").inner_text().startswith("admin")
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/login")
    page.goto(console_url(system) + "/")
    page.wait_for_url("**/login?next=*")


def test_a_saga_started_through_the_api_appears_in_flight_then_completes_without_reload(
    page: Any, system: Stack
) -> None:
    log_in(page, system)
    # With shipping stopped the saga stays in flight long enough to be seen there.
    system.processes["shipping"].stop()
    page.evaluate("window.__notReloaded = true")
    request = post_saga(system, order())
    row = f"#in-flight tr[data-correlation-id='{request['id']}']"
    page.wait_for_selector(row)
    page.wait_for_selector(f"{row} >> text={STEP_OF['shipping']}")
    shot(page, "02-overview-saga-in-flight")
    system.processes["shipping"].start()
    page.wait_for_selector(
        f"#finished tr[data-correlation-id='{request['id']}'][data-status=completed]"
    )
    assert page.locator(row).count() == 0
    assert page.evaluate("window.__notReloaded") is True  # htmx swapped the panel, no reload
    shot(page, "03-overview-saga-completed")

    # Its timeline: three forward steps, each succeeded, with their commands and replies.
    page.click(f"#finished tr[data-correlation-id='{request['id']}'] a")
    page.wait_for_selector("#saga-status:has-text('completed')")
    timeline = page.locator("#timeline")
    for step in STEP_OF.values():
        assert timeline.locator(f"td:text-is('{step}')").count() >= 1
    assert timeline.locator(".status-succeeded").count() >= 3
    page.locator("#timeline details").nth(1).evaluate("d => d.open = true")
    shot(page, "04-saga-timeline")


def test_abort_a_saga_held_at_a_stopped_participant_and_watch_it_compensate(
    page: Any, system: Stack
) -> None:
    log_in(page, system)
    system.processes["payments"].stop()
    try:
        request = post_saga(system, order())
        open_saga_found_by_search(page, system, request["id"])
        page.wait_for_selector(
            f"#diagnosis:has-text('Waiting for the reply to step {STEP_OF['payments']}')"
        )
        # Once the relay has published the command, the page says who is not answering.
        page.wait_for_selector("#diagnosis:has-text('the participant has not answered')")
        shot(page, "05-saga-held-at-charge-payment")
        page.click("#abort")
        page.wait_for_selector("h1:has-text('Abort')")
        page.fill("input[name=reason]", "payments is down " + uuid.uuid4().hex[:6])
        shot(page, "06-abort-confirmation")
        page.click("#confirm")
        page.wait_for_selector("text=Abort (compensate now): applied.")
        page.wait_for_selector("#audit >> text=admin")
        assert page.locator("#saga-status").inner_text() in ("compensating", "compensated")
        shot(page, "07-saga-aborted-compensating")
    finally:
        system.processes["payments"].start()
    # The panel refreshes itself: the compensation finishes once payments is back.
    page.wait_for_selector("#saga-status:has-text('compensated')", timeout=60_000)
    assert page.locator("#timeline .kind-compensation").count() >= 1
    assert page.locator("#audit td:text-is('abort')").count() == 1
    shot(page, "08-saga-compensated")


def open_saga_found_by_search(page: Any, system: Stack, correlation_id: str) -> None:
    """Search the sagas list for a request the gateway has accepted, reloading as an operator
    would until the orchestrator has started its saga, then open it."""
    row = f"tr[data-correlation-id='{correlation_id}'] a"

    def listed() -> bool:
        page.goto(f"{console_url(system)}/sagas?q={correlation_id}")
        return bool(page.locator(row).count())

    eventually_sync(
        listed, timeout_s=30, what=f"saga {correlation_id} in the list", interval_s=0.25
    )
    page.click(row)


def test_sagas_list_and_dead_letters_pages_render(page: Any, system: Stack) -> None:
    log_in(page, system)
    page.goto(console_url(system) + "/sagas")
    page.wait_for_selector("#sagas tbody tr[data-saga-id]")
    page.select_option("select[name=status]", "completed")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**status=completed*")
    statuses = page.locator("#sagas tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses and set(statuses) == {"completed"}
    shot(page, "09-sagas-filtered")
    page.click("a:has-text('Bulk abort')")
    page.wait_for_selector("#bulk-count")
    shot(page, "10-bulk-abort-confirmation")
    page.goto(console_url(system) + "/dead-letters")
    page.wait_for_selector("#dead-letters")
    shot(page, "11-dead-letters")


def test_revoking_a_session_asks_first_then_ends_it(page: Any, system: Stack) -> None:
    """The confirmation comes from console/static/console.js (no inline handler under the CSP):
    dismissed, nothing happens; accepted, the session ends and the browser must log in again."""
    log_in(page, system)
    page.goto(console_url(system) + "/sessions")
    row = page.locator("#sessions tr:has(.pill:text-is('this session'))")
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss() if len(asked) == 1 else dialog.accept()

    page.on("dialog", answer)
    row.locator("button:has-text('Revoke')").click()
    assert asked == ["End this session of admin?"]  # console.js asked, under the CSP
    page.reload()  # still logged in: the dismissed form was not sent
    page.wait_for_selector("#sessions .pill:text-is('this session')")
    shot(page, "12-sessions")
    row.locator("button:has-text('Revoke')").click()
    page.wait_for_url("**/login?next=*")
    assert len(asked) == 2
