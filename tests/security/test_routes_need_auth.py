"""Every route needs credentials, found by walking the apps' route tables (mounts included), so
a route added later is covered without touching this file: the gateway answers 401 on all but
an explicit public allow-list, its internal routes do not exist on the public listener, and the
console sends anyone without a session to the login page and refuses every POST without the
session's CSRF token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from gateway.app import create_internal_app
from gateway.auth import hash_api_key, issue_token
from sagaway.settings import RouteConfig
from tests.console.conftest import Seeded
from tests.gateway.conftest import MakeGateway

# Decided in docs/gateway.md ("Public routes"): liveness, readiness and the API description.
GATEWAY_PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json")}
CONSOLE_PUBLIC = {("GET", "/login"), ("POST", "/login")}
CONSOLE_PUBLIC_MOUNTS = {"/static"}

API_KEY = "the-right-key"
BEARER_SECRET = "bearer-secret-for-tests"


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, BaseRoute]]:
    """(method, path template, route) for every route, descending into mounts; a mount of
    something other than a router (static files) is yielded once with method '*'."""
    for route in routes:
        if isinstance(route, Mount):
            inner = getattr(route.app, "routes", None)
            if inner:
                yield from walk(list(inner), prefix + route.path)
            else:
                yield "*", prefix + route.path, route
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield method, prefix + route.path, route


def concrete(template: str, values: dict[str, str]) -> str:
    path = template
    for name, value in values.items():
        for convertor in ("", ":int", ":str", ":path"):
            path = path.replace("{" + name + convertor + "}", value)
    assert "{" not in path, f"no value for a parameter of {template}"
    return path


async def test_every_gateway_route_but_the_public_ones_answers_401_without_credentials(
    make_gateway: MakeGateway,
) -> None:
    running = await make_gateway(
        "gw-auth",
        api_keys={"shop": hash_api_key(API_KEY)},
        bearer_secret=BEARER_SECRET,
        # Every failure here comes from one address: without this it would soon be 429
        # (tests/gateway/test_auth_costs.py checks that limit).
        auth_failure_burst=0,
        routes=[
            RouteConfig(method="POST", path="/api/v1/orders", saga="place-order"),
            RouteConfig(method="PUT", path="/api/v1/shop/orders", saga="place-order"),
        ],
    )
    app = running.client._transport.app  # type: ignore[attr-defined]
    found = list(walk(app.routes))
    assert {(m, p) for m, p, _ in found} >= GATEWAY_PUBLIC, "the allow-list names real routes"
    assert ("PUT", "/api/v1/shop/orders") in {(m, p) for m, p, _ in found}
    values = {"saga_type": "place-order", "request_id": str(uuid.uuid4())}
    expired = issue_token(BEARER_SECRET, "shop", ttl_s=-10)
    forged = issue_token("another-secret", "shop")
    bad_credentials: list[dict[str, str]] = [
        {},
        {"X-API-Key": "wrong-key"},
        {"X-API-Key": ""},
        {"Authorization": "ApiKey wrong-key"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Basic c2hvcDp0aGUtcmlnaHQta2V5"},
    ]
    checked = 0
    for method, template, _route in found:
        path = concrete(template, values)
        if (method, template) in GATEWAY_PUBLIC:
            response = await running.client.request(method, path)
            assert response.status_code in (200, 503), (method, path)
            continue
        for headers in bad_credentials:
            response = await running.client.request(
                method, path, json={"customer_id": "c"}, headers=headers
            )
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            checked += 1
        # ... and the right key gets past authentication on the same route.
        response = await running.client.request(
            method, path, json={}, headers={"X-API-Key": API_KEY, "Prefer": "respond-async"}
        )
        assert response.status_code not in (401, 403), (method, path)
    assert checked >= 4 * len(bad_credentials)


async def test_internal_routes_are_not_on_the_public_listener(make_gateway: MakeGateway) -> None:
    running = await make_gateway("gw-internal", api_keys={"shop": hash_api_key(API_KEY)})
    public = {
        (m, p)
        for m, p, _ in walk(running.client._transport.app.routes)  # type: ignore[attr-defined]
    }
    internal = create_internal_app(running.gateway)
    only_internal = [(m, p) for m, p, _ in walk(internal.routes) if (m, p) not in public]
    assert ("GET", "/metrics") in only_internal
    for method, path in only_internal:
        for headers in ({}, {"X-API-Key": API_KEY}):
            response = await running.client.request(method, path, headers=headers)
            assert response.status_code == 404, (method, path)
            assert response.headers["content-type"] == "application/problem+json"


def console_values(seeded: Seeded) -> dict[str, str]:
    return {"saga_id": seeded.waiting, "action": "abort", "letter_id": "1", "audit_id": "1"}


def test_every_console_route_but_login_and_static_needs_a_session(
    make_client: Any, seeded: Seeded
) -> None:
    client: TestClient = make_client(None)
    found = list(walk(client.app.routes))  # type: ignore[attr-defined]
    assert {(m, p) for m, p, _ in found} >= CONSOLE_PUBLIC
    values = console_values(seeded)
    checked = 0
    for method, template, _route in found:
        if method == "*":
            assert template in CONSOLE_PUBLIC_MOUNTS, f"unexpected mount {template}"
            assert client.get(template + "/console.css").status_code == 200
            continue
        if (method, template) in CONSOLE_PUBLIC:
            continue
        path = concrete(template, values)
        for headers in ({}, {"HX-Request": "true"}):
            response = client.request(
                method, path, headers=headers, data={"csrf_token": "x"}, follow_redirects=False
            )
            if method == "GET" and not headers:
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/login"), (method, path)
            else:
                assert response.status_code in (401, 403), (method, path, response.status_code)
            assert seeded.waiting not in response.text or response.status_code == 303
            checked += 1
    assert checked >= 10


def test_every_console_post_refuses_a_missing_or_wrong_csrf_token(
    make_client: Any, seeded: Seeded
) -> None:
    client: TestClient = make_client("olga")  # an operator: only the token is missing
    posts = [t for m, t, _ in walk(client.app.routes) if m == "POST"]  # type: ignore[attr-defined]
    assert {"/login", "/logout", "/sagas/bulk"} <= set(posts)
    values = console_values(seeded)
    before = client.get(f"/sagas/{seeded.waiting}").text
    form = {"action": "abort", "status": "running", "step": "charge", "reason": "csrf test"}
    for template in posts:
        path = concrete(template, values)
        for token in (None, "", "forged-token"):
            data = dict(form) if token is None else {**form, "csrf_token": token}
            response = client.post(path, data=data, follow_redirects=False)
            assert response.status_code == 403, (path, token, response.status_code)
            assert "CSRF" in response.text
    # Nothing happened: still logged in, the saga untouched.
    after = client.get(f"/sagas/{seeded.waiting}")
    assert after.status_code == 200
    assert after.text.count("compensat") == before.count("compensat")
