"""The console's security headers on every kind of response (pages, htmx panels, forms, error
pages, redirects, static files), a Content-Security-Policy without 'unsafe-inline' or
'unsafe-eval', and pages that need neither: no inline script, event handler or style; and the
limits on request headers (431)."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from console.models import dead_letters
from tests.console import seeding
from tests.console.conftest import Seeded, csrf_of
from tests.console.sagas import CHARGE

REQUIRED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(response: httpx.Response, where: str) -> None:
    headers = response.headers
    for name, value in REQUIRED.items():
        assert headers.get(name) == value, (where, name, headers.get(name))
    csp = headers.get("content-security-policy", "")
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip()
    )
    assert directives.get("script-src") == "'self'", (where, csp)
    assert directives.get("style-src") == "'self'", (where, csp)
    assert directives.get("frame-ancestors") == "'none'", (where, csp)
    assert directives.get("default-src") == "'none'", (where, csp)
    assert "unsafe" not in csp, (where, csp)
    if headers.get("content-type", "").startswith("text/html"):
        assert "no-store" in headers.get("cache-control", ""), where


class InlineCode(HTMLParser):
    """Collects what a strict CSP blocks: inline <script>, <style>, style= and on*= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style>")
        for name in names:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}=>")


def assert_no_inline_code(html: str, where: str) -> None:
    parser = InlineCode()
    parser.feed(html)
    assert parser.found == [], (where, parser.found)


async def _dead_letter(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            dead_letters.insert().values(
                dlq_topic="cards.requests.dlq",
                dlq_partition=0,
                dlq_offset=7,
                source_topic="cards.requests",
                key="k",
                headers={"saga-id": "s-1"},
                value_text='{"n": 1}',
                value_b64="eyJuIjogMX0=",
                error="boom",
                failed_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                status="new",
            )
        )
        return int(result.inserted_primary_key[0])


def test_every_console_response_carries_the_security_headers(
    make_client: Any, seeded: Seeded
) -> None:
    letter = seeded.run(_dead_letter)
    failed = seeded.run(seeding.failed_compensation)
    anonymous = make_client(None)
    operator = make_client("olga")
    viewer = make_client("vera")
    token = csrf_of(operator.get("/").text)
    html_pages = {
        "login form": anonymous.get("/login"),
        "wrong password": anonymous.post(
            "/login",
            data={
                "csrf_token": csrf_of(anonymous.get("/login").text),
                "username": "x",
                "password": "y",
            },
        ),
        "overview": operator.get("/"),
        "overview panel (htmx)": operator.get("/overview/panel", headers={"HX-Request": "true"}),
        "sagas": operator.get("/sagas"),
        "saga": operator.get(f"/sagas/{seeded.waiting}"),
        "saga with timeline": operator.get(f"/sagas/{failed}"),
        "saga panel (htmx)": operator.get(f"/sagas/{seeded.waiting}/panel"),
        "confirm action": operator.get(f"/sagas/{seeded.waiting}/actions/skip?step={CHARGE}"),
        "action form error": operator.post(
            f"/sagas/{seeded.waiting}/actions/skip",
            data={"csrf_token": token, "step": CHARGE, "result": "[]"},
        ),
        "confirm bulk": operator.get("/sagas/bulk?action=retry&status=running"),
        "bulk done": operator.post(
            "/sagas/bulk", data={"csrf_token": token, "action": "retry", "status": "failed"}
        ),
        "dead letters": operator.get("/dead-letters"),
        "dead letter": operator.get(f"/dead-letters/{letter}"),
        "sessions": operator.get("/sessions"),
        "404": operator.get("/sagas/no-such-saga"),
        "403 role": viewer.get(f"/sagas/{seeded.waiting}/actions/abort"),
        "403 csrf": operator.post("/sagas/bulk", data={"action": "retry"}),
        "400 filter": operator.get("/sagas?status=bogus"),
        "401 post": anonymous.post("/sagas/bulk", data={}),
    }
    for where, response in html_pages.items():
        assert response.headers["content-type"].startswith("text/html"), where
        assert_secured(response, where)
        assert_no_inline_code(response.text, where)
    assert html_pages["overview"].status_code == 200
    assert "<svg" in html_pages["overview"].text  # the charts are markup, not script
    assert 'class="track"' in html_pages["saga with timeline"].text
    others = {
        "redirect to login": anonymous.get("/sagas", follow_redirects=False),
        "htmx login redirect": anonymous.get("/overview/panel", headers={"HX-Request": "true"}),
        "stylesheet": anonymous.get("/static/console.css"),
        "htmx": anonymous.get("/static/htmx.min.js"),
        "console script": anonymous.get("/static/console.js"),
        "static 404": anonymous.get("/static/nope.js"),
        "control character refused": operator.get("/sagas?q=%00"),
    }
    for where, response in others.items():
        assert_secured(response, where)
    assert others["stylesheet"].status_code == 200
    assert others["console script"].status_code == 200


def test_htmx_is_configured_not_to_need_inline_style_or_eval(
    make_client: Any, seeded: Seeded
) -> None:
    html = make_client("olga").get("/").text
    assert (
        '<meta name="htmx-config" content=\'{"includeIndicatorStyles": false, '
        '"allowEval": false, "allowScriptTags": false}\'>'
    ) in html


def test_the_dead_letter_confirmations_come_from_the_static_script(
    make_client: Any, seeded: Seeded
) -> None:
    letter = seeded.run(_dead_letter)
    html = make_client("olga").get(f"/dead-letters/{letter}").text
    assert 'data-confirm="Replay this record to its source topic?"' in html
    assert "onsubmit" not in html


def test_oversized_or_too_many_request_headers_are_refused_with_431(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client(None)
    huge = client.get("/login", headers={"X-Padding": "a" * 2_000_000})
    many = client.get("/login", headers={f"X-H{i}": "1" for i in range(500)})
    for response in (huge, many):
        assert response.status_code == 431
        assert_secured(response, "431")
    assert client.get("/login").status_code == 200
