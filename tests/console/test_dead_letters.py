"""Dead letters: collected from `<topic>.dlq` on the (real, embedded) broker, listed, inspected,
replayed to their source topic or discarded, one by one or in bulk — each recorded in the audit
log under the letter (and its saga only if that exists); a replay that fails again is linked."""

from __future__ import annotations

import asyncio
import re
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


def poison(n: int, saga_id: str | None = None) -> Record:
    saga = saga_id or f"saga-{n}"
    return Record(
        topic="cards.requests",
        value=f'{{"amount_cents": "{seeding.XSS}", "n": {n}}}'.encode(),
        key=saga.encode(),
        headers=(("message-id", f"m-{n}".encode()), ("saga-id", saga.encode())),
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
    by_key = letters_by_key(client, listing)
    first, second = by_key["saga-1"], by_key["saga-2"]

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
    assert replayed.header("replay-of") == str(first).encode()

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

    # Filed under the letter: saga-1 and saga-2 are no sagas of this database.
    entries = [
        (e["action"], e["actor"], e["saga_id"], e["target_kind"], e["target_id"])
        for e in audit(seeded)
    ]
    assert entries == [
        ("replay-dlq", "olga", None, "dead-letter", str(first)),
        ("discard-dlq", "olga", None, "dead-letter", str(second)),
    ]


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


def letters_by_key(client: TestClient, listing: str) -> dict[str, int]:
    """The letter of each record key on a list page (a batch may be stored in any order)."""
    found = {}
    for letter in letter_ids(listing):
        page = client.get(f"/dead-letters/{letter}").text
        match = re.search(r'<dt>Key</dt><dd class="mono">([^<]+)</dd>', page)
        assert match, f"no key on dead letter {letter}"
        found[match.group(1)] = letter
    return found


def letter_ids(html: str) -> list[int]:
    """The ids of the letters a dead-letter list links to, newest first."""
    return [int(i) for i in re.findall(r'href="/dead-letters/(\d+)"', html)]


def test_a_letters_saga_is_linked_only_when_that_saga_exists(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(1), poison(2, seeded.waiting)])
    listing = wait_for(client, "/dead-letters", "new (2)")
    by_key = letters_by_key(client, listing)
    missing, real = by_key["saga-1"], by_key[seeded.waiting]
    page = client.get(f"/dead-letters/{missing}")
    assert page.status_code == 200
    saga = page.text.split('id="letter-saga">', 1)[1].split("</dd>", 1)[0]
    assert "saga-1" in saga and "no such saga" in saga and "href" not in saga
    linked = client.get(f"/dead-letters/{real}").text
    assert f'href="/sagas/{seeded.waiting}"' in linked
    assert client.get(f"/sagas/{seeded.waiting}").status_code == 200

    # The discard of the letter naming a real saga is filed under both; the other under the
    # letter only.
    token = csrf_of(page.text)
    for letter in (missing, real):
        client.post(f"/dead-letters/{letter}/discard", data={"csrf_token": token})
    filed = [(e["saga_id"], e["target_id"]) for e in audit(seeded)]
    assert filed == [(None, str(missing)), (seeded.waiting, str(real))]
    saga_page = client.get(f"/sagas/{seeded.waiting}").text
    assert "discard-dlq" in saga_page.split('id="audit"', 1)[1]


def test_a_replay_that_fails_again_is_linked_to_its_new_copy_and_back(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(3)])
    [original] = letter_ids(wait_for(client, "/dead-letters", "saga-3"))
    token = csrf_of(client.get(f"/dead-letters/{original}").text)
    response = client.post(
        f"/dead-letters/{original}/replay", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert "Replayed to cards.requests" in client.get(response.headers["location"]).text
    # The consumer fails on the replayed record again: it goes back to the DLQ, as the
    # consuming loop (sagaway.messaging.processing) sends it.
    [replayed] = read_topic(seeded.settings, "cards.requests", expect=1)

    async def fail_again() -> None:
        transport = EmbeddedTransport(seeded.settings.messaging)
        await transport.start()
        try:
            await transport.produce([dead_letter(replayed, "ValueError: still not an integer")])
        finally:
            await transport.close()

    asyncio.run(fail_again())
    listing = wait_for(client, "/dead-letters", "still not an integer")
    # The copy's row, and in it "replay of #original".
    copy, of = letter_ids(listing.split('id="dead-letters"', 1)[1])
    assert copy != original and of == original
    copy_page = client.get(f"/dead-letters/{copy}").text
    assert f'<dd id="replay-of"><a href="/dead-letters/{original}">' in copy_page
    original_page = client.get(f"/dead-letters/{original}").text
    assert f'<dd id="failed-again"><a href="/dead-letters/{copy}">' in original_page
    # Replaying the copy names the copy, not the first original.
    token = csrf_of(copy_page)
    client.post(f"/dead-letters/{copy}/replay", data={"csrf_token": token})
    records = read_topic(seeded.settings, "cards.requests", expect=2)
    assert [r.header("replay-of") for r in records] == [
        str(original).encode(), str(copy).encode()
    ]


def bulk_form(html: str) -> dict[str, str]:
    form = html.split('class="confirm"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', form))


def test_bulk_discard_lists_the_letters_then_a_reload_repeats_nothing(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client("olga", background=True, page_size=2)
    send_to_dlq(seeded.settings, [poison(n) for n in (4, 5, 6)])
    wait_for(client, "/dead-letters", "new (3)")
    listing = client.get("/dead-letters").text
    assert 'id="bulk-discard"' in listing
    page = client.get("/dead-letters/bulk?action=discard")
    assert page.status_code == 200
    assert "3 dead letters will be discarded." in page.text
    table = page.text.split('id="bulk-targets"', 1)[1]
    assert re.findall(r'data-letter-id="(\d+)"', table)  # listed, two a page
    older = re.search(r'href="([^"]+)" rel="next" id="bulk-older"', page.text)
    assert older
    rest = client.get(older.group(1).replace("&amp;", "&")).text
    shown = re.findall(r'data-letter-id="(\d+)"', table) + re.findall(
        r'data-letter-id="(\d+)"', rest.split('id="bulk-targets"', 1)[1]
    )
    assert len(set(shown)) == 3
    response = client.post(
        "/dead-letters/bulk",
        data={"csrf_token": csrf_of(page.text), **bulk_form(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    for _ in range(2):
        result = client.get(response.headers["location"]).text
        assert "Applied to 3 dead letters; refused for 0." in result
    actions = [(e["action"], e["target_kind"]) for e in audit(seeded)]
    assert actions == [("bulk-discard-dlq", "bulk")] + [("discard-dlq", "dead-letter")] * 3
    assert "discarded (3)" in client.get("/dead-letters").text


def test_bulk_replay_sends_each_new_letter_back_once(make_client: Any, seeded: Seeded) -> None:
    client = make_client("olga", background=True)
    send_to_dlq(seeded.settings, [poison(n) for n in (7, 8)])
    wait_for(client, "/dead-letters", "new (2)")
    page = client.get("/dead-letters/bulk?action=replay")
    assert "2 dead letters will be replayed." in page.text
    data = {"csrf_token": csrf_of(page.text), **bulk_form(page.text)}
    first = client.post("/dead-letters/bulk", data=data, follow_redirects=False)
    again = client.post("/dead-letters/bulk", data=data, follow_redirects=False)
    assert first.headers["location"] == again.headers["location"]
    records = read_topic(seeded.settings, "cards.requests", expect=2)
    assert sorted(r.header("message-id") or b"" for r in records) == [b"m-7", b"m-8"]
    assert "replayed (2)" in client.get("/dead-letters?status=replayed").text
    assert [e["action"] for e in audit(seeded)].count("replay-dlq") == 2
