"""Dead letters: collected from `<topic>.dlq` on the (real, embedded) broker, listed, inspected,
replayed to their source topic or discarded — each recorded in the audit log."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions
from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.processing import dead_letter
from sagaway.messaging.records import Record
from sagaway.settings.composed import Settings
from tests.console import seeding
from tests.console.conftest import Seeded, csrf_of
from tests.harness.waiting import eventually, eventually_sync


def poison(n: int) -> Record:
    return Record(
        topic="cards.requests",
        value=f'{{"amount_cents": "{seeding.XSS}", "n": {n}}}'.encode(),
        key=f"saga-{n}".encode(),
        headers=(("message-id", f"m-{n}".encode()), ("saga-id", f"saga-{n}".encode())),
        partition=0,
        offset=n,
    )


def send_to_dlq(settings: Settings, records: list[Record]) -> None:
    async def produce() -> None:
        transport = EmbeddedTransport(settings.messaging)
        await transport.start()
        try:
            await transport.create_topics({"cards.requests": 1, "cards.requests.dlq": 1})
            await transport.produce(
                [dead_letter(r, "ValueError: amount_cents is not an integer") for r in records]
            )
        finally:
            await transport.close()

    asyncio.run(produce())


def read_topic(settings: Settings, topic: str, expect: int) -> list[Record]:
    async def consume() -> list[Record]:
        transport = EmbeddedTransport(settings.messaging)
        await transport.start()
        subscription = transport.subscribe("test-reader", [topic])
        await subscription.start()
        found: list[Record] = []

        async def enough() -> bool:
            found.extend(await subscription.fetch(100, 200))
            return len(found) >= expect

        try:
            await eventually(
                enough, timeout_s=10, what=f"{expect} records on {topic}", interval_s=0
            )
        finally:
            await subscription.close()
            await transport.close()
        return found

    return asyncio.run(consume())


def wait_for(client: TestClient, path: str, text: str, timeout_s: float = 15.0) -> str:
    """The page at `path` once it shows `text`."""

    def page() -> str | None:
        html = client.get(path).text
        return html if text in html else None

    return eventually_sync(page, timeout_s=timeout_s, what=f"{text!r} on {path}")


def audit(seeded: Seeded) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(operator_actions).order_by(operator_actions.c.id))
            return [dict(r) for r in rows.mappings()]

    return list(seeded.run(read))


def test_dead_letters_are_collected_replayed_and_discarded(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(1), poison(2)])
    listing = wait_for(client, "/dead-letters", "saga-2")
    assert "cards.requests" in listing and "new (2)" in listing
    ids = sorted(
        int(part.split('"')[0])
        for part in listing.split("/dead-letters/")[1:]
        if part.split('"')[0].isdigit()
    )
    first, second = ids

    page = client.get(f"/dead-letters/{first}")
    assert page.status_code == 200
    assert "amount_cents is not an integer" in page.text
    assert seeding.XSS not in page.text and "&lt;script&gt;" in page.text
    token = csrf_of(page.text)

    # Without the token: refused, nothing replayed.
    assert client.post(f"/dead-letters/{first}/replay", data={}).status_code == 403

    response = client.post(
        f"/dead-letters/{first}/replay", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "replayed" in client.get(f"/dead-letters/{first}").text
    [replayed] = read_topic(seeded.settings, "cards.requests", expect=1)
    assert replayed.value == poison(1).value and replayed.key == b"saga-1"
    assert replayed.header("message-id") == b"m-1"
    assert replayed.header("dlq-error") is None  # a replayed letter goes back clean

    # Replaying twice does nothing the second time.
    again = client.post(f"/dead-letters/{first}/replay", data={"csrf_token": token})
    assert again.status_code == 409

    assert (
        client.post(
            f"/dead-letters/{second}/discard", data={"csrf_token": token}, follow_redirects=False
        ).status_code
        == 303
    )
    discarded = client.get("/dead-letters?status=discarded").text
    assert "saga-2" in discarded and "olga" in discarded

    entries = [(e["action"], e["actor"], e["saga_id"]) for e in audit(seeded)]
    assert entries == [("replay-dlq", "olga", "saga-1"), ("discard-dlq", "olga", "saga-2")]


def test_a_viewer_can_read_dead_letters_but_not_replay_them(
    make_client: Any, seeded: Seeded
) -> None:
    operator = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(7)])
    wait_for(operator, "/dead-letters", "saga-7")
    viewer = make_client("vera")
    listing = viewer.get("/dead-letters").text
    letter_id = int(listing.split("/dead-letters/")[1].split('"')[0])
    page = viewer.get(f"/dead-letters/{letter_id}")
    assert page.status_code == 200 and "Replay to" not in page.text
    response = viewer.post(
        f"/dead-letters/{letter_id}/replay", data={"csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 403
    assert audit(seeded) == []


def test_dead_letter_list_rejects_bad_parameters(viewer: TestClient) -> None:
    assert viewer.get("/dead-letters?status=lost").status_code == 400
    assert viewer.get("/dead-letters?before=x").status_code == 400
    assert viewer.get("/dead-letters/999").status_code == 404
