"""Every console page through Starlette's TestClient, on migrated SQLite databases holding sagas
made by the real engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from console.app import console_lifespan
from console.auth import ConsoleConfigError
from tests.console import seeding
from tests.console.conftest import (
    PASSWORDS,
    Seeded,
    console_app,
    console_settings,
    csrf_of,
    log_in,
)
from tests.console.sagas import CHARGE, HOLD


def test_every_page_asks_for_a_login_first(make_client: Any, seeded: Seeded) -> None:
    client = make_client(None)
    for path in ["/", "/overview/panel", "/sagas", f"/sagas/{seeded.waiting}", "/dead-letters"]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")


def test_htmx_refresh_after_the_session_ended_redirects_the_whole_page(make_client: Any) -> None:
    client = make_client(None)
    response = client.get("/overview/panel", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_login_sets_a_secure_http_only_cookie_and_logout_ends_the_session(
    make_client: Any,
) -> None:
    client = make_client(None)
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "username": "olga",
            "password": PASSWORDS["olga"],
            "csrf_token": csrf_of(page.text),
            "next": "/sagas",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/sagas"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    overview = client.get("/")
    assert overview.status_code == 200 and "olga" in overview.text
    client.post("/logout", data={"csrf_token": csrf_of(overview.text)})
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_wrong_password_or_unknown_user_is_refused(make_client: Any) -> None:
    client = make_client(None)
    for name, password in [("olga", "nope"), ("nobody", PASSWORDS["olga"])]:
        page = client.get("/login")
        response = client.post(
            "/login",
            data={"username": name, "password": password, "csrf_token": csrf_of(page.text)},
        )
        assert response.status_code == 401
        assert "Wrong user name or password" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_without_csrf_token_is_refused(make_client: Any) -> None:
    client = make_client(None)
    client.get("/login")
    response = client.post("/login", data={"username": "olga", "password": PASSWORDS["olga"]})
    assert response.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_site(make_client: Any) -> None:
    client = make_client(None)
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "username": "vera",
            "password": PASSWORDS["vera"],
            "csrf_token": csrf_of(page.text),
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_a_console_without_users_or_with_a_plain_password_does_not_start(seeded: Seeded) -> None:
    with pytest.raises(ConsoleConfigError, match="no console users"):
        console_app(console_settings(seeded.settings.storage.data_dir, users=[]))
    with pytest.raises(ConsoleConfigError, match="not an argon2 hash"):
        console_app(
            console_settings(
                seeded.settings.storage.data_dir,
                users=[{"name": "x", "role": "operator", "password_hash": "secret"}],
            )
        )


def test_overview_shows_sagas_requests_outbox_and_consumer_lag(
    viewer: TestClient, seeded: Seeded
) -> None:
    page = viewer.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'hx-trigger="every 3.0s"' in html
    assert 'id="count-running">1<' in html
    assert 'id="count-completed">1<' in html
    assert 'id="count-compensated">1<' in html
    assert 'id="count-failed">1<' in html
    assert f'data-saga-id="{seeded.waiting}"' in html
    # The gateway's request held open, and the pending sync count of its gateway.
    assert 'id="count-requests">1<' in html
    assert "gw-1" in html
    # Outbox lag: the orchestrator's unpublished commands; a service without a database says so.
    assert "Outbox lag per service" in html and "no database (not started?)" in html
    assert "<svg" in html and "Completions and compensations per minute" in html
    assert "Consumer lag per topic and group" in html


def test_overview_panel_is_the_fragment_htmx_swaps_in(viewer: TestClient) -> None:
    panel = viewer.get("/overview/panel")
    assert panel.status_code == 200
    assert panel.text.lstrip().startswith('<div id="overview"')
    assert "<html" not in panel.text


def test_saga_list_filters_by_status_type_age_and_id(viewer: TestClient, seeded: Seeded) -> None:
    def ids(query: str) -> set[str]:
        response = viewer.get(f"/sagas?{query}")
        assert response.status_code == 200
        return {s for s in seeded_ids(seeded) if f'data-saga-id="{s}"' in response.text}

    every = set(seeded_ids(seeded))
    assert ids("") == every
    assert ids("status=running") == {seeded.waiting}
    assert ids("status=compensated") == {seeded.compensated}
    assert ids("type=no-such-saga") == {seeded.failed}
    assert ids("type=book-trip&status=completed") == {seeded.completed}
    assert ids("age=lt1h") == every
    assert ids("age=gt1h") == set()
    assert ids(f"q={seeded.waiting}") == {seeded.waiting}
    assert ids(f"q=corr-{seeded.compensated}") == {seeded.compensated}
    assert ids("q=carol") == {seeded.compensated}


def seeded_ids(seeded: Seeded) -> list[str]:
    return [seeded.completed, seeded.waiting, seeded.compensated, seeded.failed]


def test_saga_list_rejects_an_unknown_filter_or_cursor(viewer: TestClient) -> None:
    assert viewer.get("/sagas?status=stuck").status_code == 400
    assert viewer.get("/sagas?age=forever").status_code == 400
    assert viewer.get("/sagas?before=not-a-cursor").status_code == 400


def test_keyset_pages_walk_every_saga_once_both_ways(make_client: Any, seeded: Seeded) -> None:
    for _ in range(3):
        seeded.run(seeding.completed)
    client = make_client("vera", page_size=2)
    seen: list[list[str]] = []
    url = "/sagas"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        rows = [line.split('"')[1] for line in page.text.split("data-saga-id=")[1:]]
        seen.append(rows)
        older = [p for p in page.text.split('href="') if 'rel="next"' in p.split(">")[0]]
        url = older[0].split('"')[0].replace("&amp;", "&") if older else ""
    flat = [s for rows in seen for s in rows]
    assert len(flat) == 7 and len(set(flat)) == 7
    assert [len(rows) for rows in seen] == [2, 2, 2, 1]
    # From the last page, "Newer" leads back to the page before it.
    newer = [p for p in page.text.split('href="') if 'rel="prev"' in p.split(">")[0]]
    back = client.get(newer[0].split('"')[0].replace("&amp;", "&"))
    assert [line.split('"')[1] for line in back.text.split("data-saga-id=")[1:]] == seen[-2]


def test_saga_page_shows_timeline_data_diagnosis_and_no_actions_for_a_viewer(
    viewer: TestClient, seeded: Seeded
) -> None:
    page = viewer.get(f"/sagas/{seeded.waiting}")
    assert page.status_code == 200
    html = page.text
    assert HOLD in html and CHARGE in html
    assert "awaiting reply" in html
    assert f"Waiting for the reply to step {CHARGE}" in html
    assert "cards.requests" in html  # the command is still unpublished: the relay is named
    assert 'hx-trigger="every' in html  # in flight: the panel refreshes itself
    assert 'id="actions"' not in html  # a viewer gets no action buttons


def test_saga_data_with_markup_is_rendered_escaped(viewer: TestClient, seeded: Seeded) -> None:
    html = viewer.get(f"/sagas/{seeded.waiting}").text
    assert seeding.XSS not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html


def test_compensated_saga_shows_compensation_and_stops_refreshing(
    viewer: TestClient, seeded: Seeded
) -> None:
    html = viewer.get(f"/sagas/{seeded.compensated}").text
    assert "kind-compensation" in html and "card declined" in html
    assert 'hx-trigger="every' not in html


def test_a_saga_that_failed_on_arrival_says_why(viewer: TestClient, seeded: Seeded) -> None:
    html = viewer.get(f"/sagas/{seeded.failed}").text
    assert "Why it is stuck" in html and "no-such-saga" in html


def test_unknown_saga_is_404(viewer: TestClient) -> None:
    assert viewer.get("/sagas/does-not-exist").status_code == 404
    assert viewer.get("/sagas/does-not-exist/panel").status_code == 404


def test_console_mounted_under_a_prefix_links_within_it(seeded: Seeded) -> None:
    mounted = console_app(seeded.settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Starlette does not run a mounted app's lifespan: the host enters it (as `sagaway dev`).
        async with console_lifespan(mounted):
            yield

    outer = Starlette(routes=[Mount("/console", app=mounted)], lifespan=lifespan)
    with TestClient(outer, base_url="https://testserver") as client:
        response = client.get("/console/", follow_redirects=False)
        assert response.headers["location"] == "/console/login?next=%2Fconsole%2F"
        log_in(client, "vera", prefix="/console")
        html = client.get(f"/console/sagas/{seeded.waiting}").text
        assert 'href="/console/static/console.css"' in html
        assert 'href="/console/sagas"' in html
        assert f'hx-get="/console/sagas/{seeded.waiting}/panel"' in html
        assert client.get("/console/static/htmx.min.js").status_code == 200
