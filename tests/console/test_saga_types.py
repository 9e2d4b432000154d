"""The console's saga-type page (issue 16, item 6): the saga's flowchart as inline SVG drawn on
the server, linked from each saga's page with that saga's current step highlighted; and the same
page in a real headless Chromium under the console's CSP (a screenshot in test-artifacts)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import uvicorn
from starlette.testclient import TestClient

from tests.console.conftest import PASSWORDS, Seeded, console_settings, log_in
from tests.console.contract_sagas_seeding import (
    answer,
    contract_console,
    start_parcel,
    waiting_at_pay,
)
from tests.harness.waiting import eventually_sync
from tests.servers.postgres import free_port

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
STEPS = {"hold", "notify", "log", "pay", "label"}


@pytest.fixture
def vera(seeded: Seeded) -> Iterator[TestClient]:
    """A viewer: the page is for everyone logged in."""
    with TestClient(contract_console(seeded.settings), base_url="https://testserver") as client:
        log_in(client, "vera")
        yield client


def diagram_of(html: str) -> ElementTree.Element:
    match = re.search(r"<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"saga-diagram\".*?</svg>",
                      html, re.S)
    assert match, "no diagram on the page"
    return ElementTree.fromstring(match.group(0))


def highlighted(svg: ElementTree.Element) -> dict[str, bool]:
    return {
        g.get("data-step", ""): "sg-current" in g.get("class", "")
        for g in svg.iter(f"{SVG}g") if g.get("data-step")
    }


def test_the_saga_type_page_draws_every_step(vera: TestClient) -> None:
    page = vera.get("/saga-types?type=ship-parcel")
    assert page.status_code == 200, page.text
    assert "style=" not in page.text  # the CSP allows no style attribute
    assert "script-src 'self'" in page.headers["content-security-policy"]
    svg = diagram_of(page.text)
    assert highlighted(svg) == dict.fromkeys(STEPS, False)
    texts = {t.text for t in svg.iter(f"{SVG}text")}
    assert {"warehouse.hold", "undo hold", "mail.retract", "billing.pay", "printer.label",
            "pivot: no return after it", "compensated", "completed", "failed"} <= texts
    assert 'id="saga-type-steps"' in page.text and "printer.label" in page.text


def test_the_list_names_every_loaded_saga_type(vera: TestClient) -> None:
    page = vera.get("/saga-types")
    assert page.status_code == 200
    assert 'href="/saga-types?type=ship-parcel&amp;version=1"' in page.text
    assert 'href="/saga-types?type=book-trip&amp;version=1"' in page.text


def test_a_sagas_page_links_to_its_type_with_its_current_step_highlighted(
    vera: TestClient, seeded: Seeded
) -> None:
    saga_id = seeded.run(waiting_at_pay)
    saga_page = vera.get(f"/sagas/{saga_id}").text
    link = re.search(r'<a id="saga-type-link" href="([^"]+)">([^<]+)</a>', saga_page)
    assert link, saga_page
    assert link.group(1) == f"/saga-types?saga={saga_id}"
    assert link.group(2) == "Flowchart of ship-parcel v1, with pay highlighted"
    page = vera.get(link.group(1))
    assert page.status_code == 200
    assert highlighted(diagram_of(page.text)) == {s: s == "pay" for s in STEPS}
    assert "at step <strong>pay</strong> (highlighted)" in page.text


def test_a_saga_in_a_parallel_group_has_every_branch_highlighted(
    vera: TestClient, seeded: Seeded
) -> None:
    saga_id = seeded.run(start_parcel)
    seeded.run(lambda engine: answer(engine, saga_id, "hold", {"hold_id": "h-1", "shelf": 3}))
    page = vera.get(f"/saga-types?saga={saga_id}")
    assert highlighted(diagram_of(page.text)) == {s: s in ("notify", "log") for s in STEPS}


def test_unknown_types_sagas_and_versions_are_not_found(vera: TestClient, seeded: Seeded) -> None:
    assert vera.get("/saga-types?type=nope").status_code == 404
    assert vera.get("/saga-types?type=ship-parcel&version=9").status_code == 404
    assert vera.get("/saga-types?type=ship-parcel&version=x").status_code == 400
    assert vera.get("/saga-types?saga=nope").status_code == 404
    other = seeded.waiting  # a book-trip saga: not of this type
    assert vera.get(f"/saga-types?type=ship-parcel&saga={other}").status_code == 404
    assert vera.get(f"/saga-types?saga={other}").status_code == 200  # its own type


def test_logged_out_users_are_sent_to_log_in(seeded: Seeded) -> None:
    with TestClient(contract_console(seeded.settings), base_url="https://testserver") as client:
        response = client.get("/saga-types?type=ship-parcel", follow_redirects=False)
    assert response.status_code in (302, 303)
    assert "/login" in response.headers["location"]


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def served_console(seeded: Seeded) -> Iterator[str]:
    """The console over HTTP on a loopback port (uvicorn in a thread), cookies not Secure."""
    settings = console_settings(seeded.settings.storage.data_dir, cookie_secure=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        contract_console(settings), host="127.0.0.1", port=port, log_level="warning",
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        eventually_sync(lambda: server.started, timeout_s=20, what="the console to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_saga_type_page_in_chromium_shows_the_diagram(
    served_console: str, seeded: Seeded
) -> None:
    from playwright.sync_api import sync_playwright

    saga_id = seeded.run(start_parcel)
    blocked: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page: Any = browser.new_page(viewport={"width": 1500, "height": 900})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: blocked.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(f"{served_console}/login")
            page.fill("input[name=username]", "vera")
            page.fill("input[name=password]", PASSWORDS["vera"])
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")
            page.goto(f"{served_console}/sagas/{saga_id}")
            page.click("#saga-type-link")
            page.wait_for_selector("svg.saga-diagram")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for path in (ARTIFACTS / "saga-type.png", Path("/tmp/saga-type.png")):
                page.screenshot(path=str(path), full_page=True)
            nodes = page.locator("svg.saga-diagram g[data-step]")
            assert sorted(nodes.evaluate_all("gs => gs.map(g => g.dataset.step)")) == sorted(STEPS)
            for step in STEPS:
                box = page.locator(f"svg.saga-diagram g[data-step='{step}']").bounding_box()
                assert box is not None and box["width"] > 80 and box["height"] > 30, (step, box)
            # The stylesheet (not an inline style) paints the current step.
            current = page.locator("svg.saga-diagram g.sg-current rect")
            assert current.count() == 1
            marked = page.locator("svg.saga-diagram g.sg-current")
            assert marked.get_attribute("data-step") == "hold"
            assert current.evaluate("r => getComputedStyle(r).fill") == "rgb(219, 234, 254)"
            assert page.locator("svg.saga-diagram text", has_text="warehouse.unhold").is_visible()
        finally:
            browser.close()
    assert blocked == [], blocked
