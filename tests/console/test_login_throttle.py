"""Login throttling: a flood of wrong passwords locks the user name (and the address) out, the
right password is refused while locked and no password is hashed for a locked attempt; an
operator lifts the lock on the Sessions page (recorded in the audit trail); lockouts double."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from console.auth import UserDirectory
from console.login_throttle import (
    ADDRESS,
    USER,
    Lockout,
    LoginThrottle,
    PasswordChecks,
    VerifierBusy,
)
from orchestrator.models import operator_actions
from tests.console.conftest import PASSWORDS, Seeded, csrf_of


def attempt(client: TestClient, name: str, password: str) -> Any:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def security_audit(seeded: Seeded) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(operator_actions).where(operator_actions.c.target_kind == "login-lock")
            )
            return [dict(r) for r in rows.mappings()]

    return list(seeded.run(read))


def test_ninety_wrong_passwords_lock_the_user_out_until_an_operator_lifts_it(
    make_client: Any, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    authenticate = UserDirectory.authenticate

    def counting(self: UserDirectory, name: str, password: str) -> Any:
        hashed.append(name)
        return authenticate(self, name, password)

    monkeypatch.setattr(UserDirectory, "authenticate", counting)
    attacker = make_client(None)
    statuses = [attempt(attacker, "vera", f"guess-{i}").status_code for i in range(90)]
    assert statuses[:4] == [401] * 4
    assert set(statuses[4:]) == {429}
    # Only the attempts before the lock cost a hash; the other 85 were refused before it.
    assert len(hashed) == 5

    right = attempt(attacker, "vera", PASSWORDS["vera"])
    assert right.status_code == 429
    assert "Too many failed logins: this user is locked" in right.text
    assert "An operator can lift the lock" in right.text
    assert int(right.headers["retry-after"]) > 0
    assert len(hashed) == 5
    # Another browser, the right password: still refused — the lock is on the name.
    assert attempt(make_client(None), "vera", PASSWORDS["vera"]).status_code == 429

    operator = make_client("olga")
    page = operator.get("/sessions")
    assert page.status_code == 200
    assert 'data-scope="user" data-subject="vera"' in page.text
    lifted = operator.post(
        "/login-locks/lift",
        data={"csrf_token": csrf_of(page.text), "scope": "user", "subject": "vera"},
        follow_redirects=False,
    )
    assert lifted.status_code == 303
    [entry] = security_audit(seeded)
    assert (entry["action"], entry["actor"], entry["outcome"]) == (
        "lift-login-lock",
        "olga",
        "applied",
    )
    assert entry["params"] == {"scope": "user", "subject": "vera"}
    assert (entry["saga_id"], entry["target_kind"], entry["target_id"]) == (
        None,
        "login-lock",
        "user vera",
    )
    assert "lifted the login lock on user vera" in operator.get("/sessions").text

    accepted = attempt(attacker, "vera", PASSWORDS["vera"])
    assert accepted.status_code == 303
    assert attacker.get("/").status_code == 200


def test_lifting_needs_an_operator_and_a_csrf_token(make_client: Any, seeded: Seeded) -> None:
    viewer, operator, attacker = make_client("vera"), make_client("olga"), make_client(None)
    for i in range(5):
        attempt(attacker, "vera", f"guess-{i}")
    # A lock refuses new logins; it does not end the sessions already open.
    assert viewer.get("/sessions").status_code == 403
    token = csrf_of(viewer.get("/").text)
    lift = {"scope": "user", "subject": "vera"}
    assert viewer.post("/login-locks/lift", data={"csrf_token": token, **lift}).status_code == 403
    forged = operator.post("/login-locks/lift", data={"csrf_token": "forged", **lift})
    assert forged.status_code == 403
    assert attempt(attacker, "vera", PASSWORDS["vera"]).status_code == 429
    assert security_audit(seeded) == []


def test_wrong_passwords_for_many_names_lock_the_address(make_client: Any) -> None:
    attacker = make_client(None)
    statuses = [attempt(attacker, f"user-{i}", "pw").status_code for i in range(20)]
    assert statuses[:19] == [401] * 19 and statuses[19] == 429
    refused = attempt(attacker, "olga", PASSWORDS["olga"])
    assert refused.status_code == 429
    assert "your address is locked" in refused.text


def test_rotating_x_forwarded_for_does_not_dodge_the_address_lock(make_client: Any) -> None:
    # No trusted_proxies: the peer is the client, whatever X-Forwarded-For says.
    attacker = make_client(None)
    for i in range(20):
        attacker.headers["X-Forwarded-For"] = f"198.51.100.{i}"
        attempt(attacker, f"user-{i}", "pw")
    attacker.headers["X-Forwarded-For"] = "203.0.113.99"
    assert attempt(attacker, "olga", PASSWORDS["olga"]).status_code == 429


def test_each_lockout_of_a_name_lasts_twice_as_long_as_the_one_before(seeded: Seeded) -> None:
    config = seeded.settings.console
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    async def run(engine: AsyncEngine) -> list[float]:
        throttle = LoginThrottle(engine, config, clock=lambda: now[0])
        lengths = []
        for _ in range(3):
            for _ in range(config.login_max_failures):
                await throttle.failed("vera", "10.0.0.9")
            lock = await throttle.lockout("vera", "10.0.0.9")
            assert lock is not None and lock.scope == USER
            lengths.append((lock.until - now[0]).total_seconds())
            now[0] = lock.until + timedelta(seconds=1)
            assert await throttle.lockout("vera", "10.0.0.9") is None
        await throttle.succeeded("vera")
        for _ in range(config.login_max_failures):
            await throttle.failed("vera", "10.0.0.9")
        lock = await throttle.lockout("vera", "10.0.0.9")
        assert lock is not None
        lengths.append((lock.until - now[0]).total_seconds())
        # Twenty failures from one address: it is locked too, for its first (base) lockout.
        assert await throttle.lift(USER, "vera") is True
        assert await throttle.lockout("vera", "10.0.0.9") == Lockout(ADDRESS, lock.until)
        return lengths

    base = config.login_lockout_s
    assert seeded.run(run) == [base, 2 * base, 4 * base, base]


def test_password_checks_beyond_the_queue_are_refused_at_once() -> None:
    async def run() -> None:
        checks = PasswordChecks(concurrency=1, queue=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with checks.slot():
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]  # one running, one queued
        await asyncio.sleep(0)
        with pytest.raises(VerifierBusy):
            async with checks.slot():
                pass
        release.set()
        await asyncio.gather(*holders)
        async with checks.slot():  # free again
            assert await checks.verify(lambda: 42) == 42

    asyncio.run(run())
