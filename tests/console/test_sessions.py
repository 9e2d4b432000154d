"""Server-side console sessions: a copied cookie is worthless after logout, a changed password
hash ends the sessions made under the old one, and an operator lists and revokes sessions (a
CSRF-checked POST, recorded in the audit trail)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from console.app import SESSION_COOKIE
from console.auth import hash_password
from console.models import console_sessions
from orchestrator.models import operator_actions
from sagaway.settings import ConsoleUser
from tests.console.conftest import PASSWORDS, Seeded, csrf_of, log_in


def cookie_of(client: TestClient) -> str:
    value = client.cookies.get(SESSION_COOKIE)
    assert value, "no session cookie"
    return value


def replay(make_client: Any, cookie: str, **settings: Any) -> TestClient:
    """A fresh browser that presents a copied session cookie."""
    client: TestClient = make_client(None, **settings)
    client.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local")
    return client


def is_logged_in(client: TestClient) -> bool:
    response = client.get("/sagas", follow_redirects=False)
    if response.status_code == 303:
        assert response.headers["location"].startswith("/login")
        return False
    assert response.status_code == 200
    return True


def rows(seeded: Seeded) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(console_sessions))
            return [dict(r) for r in result.mappings()]

    return list(seeded.run(read))


def test_a_cookie_copied_before_logout_does_not_work_after_it(
    make_client: Any, seeded: Seeded
) -> None:
    browser = make_client("olga")
    copied = cookie_of(browser)
    assert is_logged_in(replay(make_client, copied))  # the copy works while the login lasts
    token = csrf_of(browser.get("/").text)
    assert browser.post("/logout", data={"csrf_token": token}).status_code == 200
    assert not is_logged_in(browser)
    assert not is_logged_in(replay(make_client, copied))
    [row] = rows(seeded)
    assert row["revoked_at"] is not None and row["revoked_by"] == "olga"


def test_the_table_keeps_a_hash_of_the_session_id_never_the_id(
    make_client: Any, seeded: Seeded
) -> None:
    browser = make_client("olga")
    payload = cookie_of(browser).split(".", 1)[0]
    session = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    session_id = session["sid"]
    assert set(session) <= {"sid", "csrf"}  # no user name or role in the cookie
    [row] = rows(seeded)
    assert row["user_name"] == "olga"
    assert row["id_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in str(row)
    assert row["user_agent"] and row["address"]


def test_a_changed_password_hash_ends_the_sessions_made_under_the_old_one(
    make_client: Any, seeded: Seeded
) -> None:
    browser = make_client("vera")
    copied = cookie_of(browser)
    olga_hash = hash_password(PASSWORDS["olga"])
    changed = {
        "users": [
            ConsoleUser(name="olga", role="operator", password_hash=olga_hash),
            ConsoleUser(name="vera", role="viewer", password_hash=hash_password("new-vera-pw")),
        ]
    }
    # The same console restarted with vera's new password: her old session is over...
    assert not is_logged_in(replay(make_client, copied, **changed))
    # ...while olga's hash is another string of the same password: a new hash ends it too.
    olga = make_client("olga")
    assert not is_logged_in(replay(make_client, cookie_of(olga), **changed))
    unchanged = make_client("olga")
    assert is_logged_in(replay(make_client, cookie_of(unchanged)))


def test_an_operator_lists_sessions_and_revokes_one(make_client: Any, seeded: Seeded) -> None:
    viewer = make_client("vera")
    operator = make_client("olga")
    page = operator.get("/sessions")
    assert page.status_code == 200
    assert 'data-user="vera"' in page.text and 'data-user="olga"' in page.text
    assert "this session" in page.text
    [vera_row] = [row for row in rows(seeded) if row["user_name"] == "vera"]
    handle = vera_row["id_hash"]
    assert handle in page.text

    forged = operator.post("/sessions/revoke", data={"csrf_token": "x", "session": handle})
    assert forged.status_code == 403
    assert is_logged_in(viewer)
    refused = viewer.post(
        "/sessions/revoke", data={"csrf_token": csrf_of(viewer.get("/").text), "session": handle}
    )
    assert refused.status_code == 403
    assert is_logged_in(viewer)

    revoked = operator.post(
        "/sessions/revoke",
        data={"csrf_token": csrf_of(page.text), "session": handle},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert not is_logged_in(viewer)
    assert is_logged_in(operator)
    again = operator.post(
        "/sessions/revoke", data={"csrf_token": csrf_of(page.text), "session": handle}
    )
    assert again.status_code == 404

    async def audit(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(
                sa.select(operator_actions).where(operator_actions.c.action == "revoke-session")
            )
            return [dict(r) for r in result.mappings()]

    [entry] = seeded.run(audit)
    assert entry["actor"] == "olga" and entry["params"]["user"] == "vera"
    assert (entry["saga_id"], entry["target_kind"]) == (None, "session")
    assert entry["target_id"] == handle[:12]
    assert 'data-user="vera"' not in operator.get("/sessions").text
    log_in(viewer, "vera")  # a revoked session does not stop a new login
    assert is_logged_in(viewer)
