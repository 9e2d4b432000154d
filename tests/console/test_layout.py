"""The console on a phone, in dark mode and by keyboard, in real headless Chromium (Debian's,
driven by Playwright) against the console served over HTTP on seeded SQLite databases; and its
answers compressed, static files cached. Screenshots go to /tmp/console-layout-*.png."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from tests.console.conftest import PASSWORDS, Seeded, console_app, console_settings
from tests.servers.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp")
PHONE = {"width": 390, "height": 844}
browser_only = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


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
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the console did not start")
            thread.join(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def browser(console_url: str) -> Iterator[Any]:
    """Chromium, launched after the seeding (Playwright's sync API keeps a loop running)."""
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


def logged_in_page(browser: Any, url: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    page.goto(url + "/login")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORDS["olga"])
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")
    page.blocked = blocked
    return page


@browser_only
def test_every_page_fits_a_390px_phone_and_log_out_stays_on_screen(
    browser: Any, console_url: str, seeded: Seeded
) -> None:
    page = logged_in_page(browser, console_url, viewport=PHONE)
    page.screenshot(path=str(SHOTS / "console-layout-390-overview.png"), full_page=True)
    for path in ("/", "/sagas", f"/sagas/{seeded.waiting}", "/dead-letters", "/sessions"):
        page.goto(console_url + path)
        page.wait_for_selector("main h1")
        scroll_width, inner_width = page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]"
        )
        assert scroll_width <= inner_width, f"{path} scrolls sideways: {scroll_width}px"
        box = page.locator("header button:has-text('Log out')").bounding_box()
        assert box is not None
        assert 0 <= box["x"] and box["x"] + box["width"] <= inner_width, (path, box)
        name = {"/": "overview", "/sagas": "sagas"}.get(path, path.strip("/").split("/")[0])
        name = "saga" if path.startswith("/sagas/") else name
        page.screenshot(path=str(SHOTS / f"console-layout-390-{name}.png"), full_page=True)
    # A wide table scrolls inside its own box instead of the page.
    page.goto(console_url + "/sagas")
    overflow = page.evaluate(
        "getComputedStyle(document.querySelector('#sagas').parentElement).overflowX"
    )
    assert overflow == "auto"
    assert page.blocked == []


def luminance(css_color: str) -> float:
    parts = css_color[css_color.index("(") + 1 : css_color.index(")")].split(",")
    red, green, blue = (float(v) for v in parts[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


@browser_only
def test_dark_mode_follows_the_system_setting(
    browser: Any, console_url: str, seeded: Seeded
) -> None:
    dark = logged_in_page(browser, console_url, color_scheme="dark")
    dark.screenshot(path=str(SHOTS / "console-layout-dark-overview.png"), full_page=True)
    body = "getComputedStyle(document.body).backgroundColor"
    text = "getComputedStyle(document.body).color"
    assert luminance(dark.evaluate(body)) < 0.15
    assert luminance(dark.evaluate(text)) > 0.7
    dark.goto(f"{console_url}/sagas/{seeded.compensated}")
    dark.wait_for_selector("main h1")
    dark.screenshot(path=str(SHOTS / "console-layout-dark-saga.png"), full_page=True)
    for selector in (".status", ".failure", "table.timeline th"):
        color = dark.evaluate(
            f"getComputedStyle(document.querySelector('{selector}')).backgroundColor"
        )
        assert luminance(color) < 0.35, (selector, color)
    light = logged_in_page(browser, console_url, color_scheme="light")
    assert luminance(light.evaluate(body)) > 0.9
    assert dark.blocked == [] and light.blocked == []


@browser_only
def test_keyboard_focus_draws_a_visible_outline(browser: Any, console_url: str) -> None:
    page = logged_in_page(browser, console_url)
    page.keyboard.press("Tab")  # the first link: the brand
    style = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.tagName, s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )
    assert style[0] == "A"
    assert style[1] == "solid" and style[2] >= 2, style
    page.focus("header button:has-text('Log out')")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # the Log out button, reached by keyboard
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.textContent") == "Log out"
    assert outline == "solid"


def test_pages_and_static_files_come_compressed_and_static_files_cached(
    viewer: TestClient,
) -> None:
    gzip = {"Accept-Encoding": "gzip"}
    page = viewer.get("/", headers=gzip)
    assert page.headers["content-encoding"] == "gzip"
    assert page.headers["cache-control"] == "no-store"
    assert "Consumer lag per topic and group" in page.text
    script = viewer.get("/static/htmx.min.js", headers=gzip)
    assert script.headers["content-encoding"] == "gzip"
    assert int(script.headers.get("content-length", 0)) < 30_000  # 52 KB uncompressed
    assert "htmx" in script.text
    for name in ("htmx.min.js", "console.css", "console.js"):
        cached = viewer.get(f"/static/{name}")
        assert "max-age=" in cached.headers["cache-control"], name
    plain = viewer.get("/static/htmx.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
