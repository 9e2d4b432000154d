"""Authentication is never the cheapest way to stall the gateway: argon2 API-key checks run on a
bounded number of worker threads (the event loop keeps answering, and a new key arriving while
they are all busy is answered 503 at once), a wrong key is checked once, and an address that
keeps failing is answered 429 before any key is looked at."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.gateway.conftest import MakeGateway
from tests.harness.waiting import eventually

# Cheap parameters: the tests count checks, they do not measure their cost.
ARGON2_KEY = "the-right-key"
ARGON2_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(ARGON2_KEY)


class Verifier:
    """Wraps argon2's verify: counts calls, notes their threads, can hold them until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def verify(hasher: PasswordHasher, hash: str, password: str) -> Any:
            with self.lock:
                self.calls += 1
                self.threads.append(threading.get_ident())
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                # Bounded, so that code checking on the loop's thread fails instead of hanging.
                self.release.wait(timeout=2)
                return original(hasher, hash, password)
            finally:
                with self.lock:
                    self.in_flight -= 1

        return verify


@pytest.fixture
def stack() -> str:
    return "embedded"


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch) -> Iterator[Verifier]:
    counting = Verifier()
    monkeypatch.setattr(PasswordHasher, "verify", counting.wrap(PasswordHasher.verify))
    yield counting
    counting.release.set()


def status_url() -> str:
    return f"/api/v1/requests/{uuid.uuid4()}"


async def test_an_address_that_keeps_failing_is_answered_429_before_any_key_is_checked(
    make_gateway: MakeGateway, verifier: Verifier
) -> None:
    running = await make_gateway(
        "gw-fail-limit",
        api_keys={"svc": ARGON2_HASH},
        auth_failure_burst=5,
        auth_failure_per_minute=1,
    )
    statuses = []
    for n in range(9):
        answer = await running.client.get(status_url(), headers={"X-API-Key": f"wrong-{n}"})
        statuses.append(answer.status_code)
    assert statuses == [401] * 5 + [429] * 4
    assert verifier.calls == 5, "no key is checked once the address is refused"
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) >= 1
    problem = answer.json()
    assert problem["status"] == 429
    assert problem["type"].endswith("/too-many-failed-authentications")
    # The right key from the refused address waits too; another address is not affected.
    assert (
        await running.client.get(status_url(), headers={"X-API-Key": ARGON2_KEY})
    ).status_code == 429
    async with running.client_from("192.0.2.10") as other:
        answer = await other.get(status_url(), headers={"X-API-Key": ARGON2_KEY})
    assert answer.status_code == 404, answer.text
    assert verifier.calls == 6


async def test_a_wrong_key_is_checked_once_and_a_right_one_once(
    make_gateway: MakeGateway, verifier: Verifier
) -> None:
    running = await make_gateway("gw-key-cache", api_keys={"svc": ARGON2_HASH})
    for _ in range(4):
        answer = await running.client.get(status_url(), headers={"X-API-Key": "wrong"})
        assert answer.status_code == 401
    assert verifier.calls == 1
    for _ in range(4):
        answer = await running.client.get(status_url(), headers={"X-API-Key": ARGON2_KEY})
        assert answer.status_code == 404
    assert verifier.calls == 2


async def test_argon2_checks_run_on_bounded_worker_threads_while_the_loop_keeps_answering(
    make_gateway: MakeGateway, verifier: Verifier
) -> None:
    running = await make_gateway(
        "gw-argon2-threads",
        api_keys={"svc": ARGON2_HASH},
        auth_failure_burst=0,
        auth_verify_concurrency=2,
    )
    loop_thread = threading.get_ident()
    verifier.release.clear()
    held = [
        asyncio.create_task(running.client.get(status_url(), headers={"X-API-Key": f"w-{n}"}))
        for n in range(2)
    ]
    await eventually(
        lambda: verifier.in_flight == 2, timeout_s=10, what="two argon2 checks in flight"
    )
    # While both checks are held: the loop answers, and further new keys are refused at once.
    health = await running.client.get("/healthz")
    assert health.status_code == 200
    busy = await asyncio.gather(
        *(running.client.get(status_url(), headers={"X-API-Key": f"more-{n}"}) for n in range(6))
    )
    assert [answer.status_code for answer in busy] == [503] * 6
    assert busy[0].json()["type"].endswith("/authentication-busy")
    assert busy[0].headers["retry-after"] == "1"
    assert verifier.in_flight == 2
    verifier.release.set()
    assert [(await task).status_code for task in held] == [401, 401]
    assert verifier.calls == 2 and verifier.most_in_flight == 2
    assert loop_thread not in verifier.threads, "argon2 ran on the event loop's thread"
    # Capacity is back once the checks are done.
    answer = await running.client.get(status_url(), headers={"X-API-Key": ARGON2_KEY})
    assert answer.status_code == 404
