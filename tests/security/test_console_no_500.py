"""A property over every console route (found by walking the route table, so a route added later
is covered): GET or POST, with or without a session, with any path parameters, query, form
fields and headers, the console never answers 500 and never raises — on SQLite and on
PostgreSQL, which refuses some text SQLite stores (NUL) and some numbers (beyond 64 bits)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from console.app import SESSION_COOKIE
from tests.console.conftest import (  # noqa: F401 - fixtures: SQLite, then PostgreSQL
    Seeded,
    any_seeded,
    csrf_of,
    make_any_client,
    pg_seeded,
)
from tests.security.test_routes_need_auth import walk

FIELDS = [
    "status",
    "age",
    "type",
    "q",
    "before",
    "after",
    "action",
    "step",
    "result",
    "reason",
    "next",
    "done",
    "username",
    "password",
    "scope",
    "subject",
    "session",
    "csrf_token",
]
SPECIAL = [
    "",
    "running",
    "failed",
    "abort",
    "retry",
    "skip",
    "resume",
    "replay",
    "discard",
    "user",
    "address",
    "olga",
    "{}",
    "[]",
    '{"a": "\\u0000"}',
    '{"\\u0000": 1}',
    "[" * 1500,
    "null",
    "\x00",
    "a\x00b",
    "\x1b[2J",
    "\u2028",
    "x" * 3000,
    "-1",
    "99999999999999999999999",
    "//evil.example",
    "/\\evil",
    "../../etc/passwd",
    "%00",
    "MjAyNnwA",
    "😀" * 10,
    "\ud7ff",
    "lt5m",
    "gt1d",
    "0" * 64,
    "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHx4",
]
plain = st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"])
texts = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(plain, max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=20),
)
header_values = st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=60
) | st.sampled_from(["true", "", "application/json", "multipart/form-data", "text/plain"])
HEADERS = ["HX-Request", "User-Agent", "X-Forwarded-For", "Accept", "Referer", "Content-Type"]
IDENTITIES = ["operator", "viewer", "anonymous", "forged cookie"]
EXAMPLES_PER_ROUTE = 60


@st.composite
def requests(draw: st.DrawFn, method: str, template: str, ids: list[str]) -> dict[str, Any]:
    path = template
    if "{saga_id}" in path:
        path = path.replace("{saga_id}", quote(draw(st.sampled_from(ids) | texts), safe=""))
    if "{action}" in path:
        path = path.replace("{action}", quote(draw(texts), safe=""))
    if "{letter_id:int}" in path:
        path = path.replace("{letter_id:int}", str(draw(st.integers(0, 10**30))))
    if "{audit_id:int}" in path:
        path = path.replace("{audit_id:int}", str(draw(st.integers(0, 10**30))))
    if "{path:path}" in path:
        path = path.replace("{path:path}", quote(draw(texts), safe="/"))
    params = draw(st.dictionaries(st.sampled_from(FIELDS) | texts, texts, max_size=4))
    form = draw(st.dictionaries(st.sampled_from(FIELDS) | texts, texts, max_size=6))
    headers = draw(st.dictionaries(st.sampled_from(HEADERS), header_values, max_size=3))
    return {
        "method": method,
        "path": path,
        "url": path + ("?" + urlencode(params) if params else ""),
        "form": form,
        "headers": headers,
        "identity": draw(st.sampled_from(IDENTITIES)),
        "valid_csrf": draw(st.booleans()),
    }


def test_no_console_route_answers_500_to_any_input(
    make_any_client: Any,  # noqa: F811 - the fixture imported above
    any_seeded: Seeded,  # noqa: F811
) -> None:
    # Generous login limits: the property sends many wrong logins from one address.
    limits = {"login_max_failures": 10**6, "login_address_max_failures": 10**6}
    clients: dict[str, TestClient] = {
        "anonymous": make_any_client(None, **limits),
        "viewer": make_any_client("vera", **limits),
        "operator": make_any_client("olga", **limits),
        "forged cookie": make_any_client(None, **limits),
    }
    clients["forged cookie"].cookies.set(SESSION_COOKIE, "forged.value.sig", "testserver.local")
    tokens = {name: csrf_of(client.get("/login").text) for name, client in clients.items()}
    for name in ("viewer", "operator"):
        tokens[name] = csrf_of(clients[name].get("/").text)
    routes = []
    for method, template, _ in walk(clients["anonymous"].app.routes):  # type: ignore[attr-defined]
        routes.append(("GET", template + "/{path:path}") if method == "*" else (method, template))
    assert len(routes) >= 15
    ids = [any_seeded.waiting, any_seeded.completed, any_seeded.failed, any_seeded.compensated]
    answered: dict[str, set[int]] = {}

    def send(request: dict[str, Any]) -> None:
        client = clients[request["identity"]]
        form = dict(request["form"])
        # A valid token may go anywhere but to /logout, which would end the property's sessions.
        if request["valid_csrf"] and request["path"] != "/logout":
            form["csrf_token"] = tokens[request["identity"]]
        response = client.request(
            request["method"],
            request["url"],
            data=form if request["method"] == "POST" else None,
            headers=request["headers"],
            follow_redirects=False,
        )
        status = response.status_code
        answered.setdefault(request["identity"], set()).add(status)
        assert status != 500, (request, response.text[:500])
        # 503 only where the console says so: no broker to replay a dead letter to.
        assert status < 500 or (status == 503 and request["path"].endswith("/replay")), request

    for method, template in routes:

        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests(method, template, ids))
        def route_answers_without_500(request: dict[str, Any]) -> None:
            send(request)

        route_answers_without_500()
    # The logged-in clients stayed logged in and reached pages, not only refusals.
    assert 200 in answered["operator"] and 200 in answered["viewer"]
    assert clients["operator"].get("/sessions").status_code == 200
