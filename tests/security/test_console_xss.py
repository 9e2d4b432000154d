"""Console XSS beyond what tests/console covers (saga data, dead-letter values): markup in a saga
type, a principal, a step's failure reason, dead-letter headers and error texts, and in query
parameters the pages echo back (filters, `next`, error messages) — escaped on every page."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine

from sagaway.messaging.embedded import EmbeddedTransport
from sagaway.messaging.processing import dead_letter
from sagaway.messaging.records import Record
from tests.console import seeding
from tests.console.conftest import Seeded
from tests.console.sagas import CHARGE, HOLD
from tests.harness.waiting import eventually_sync

PAYLOADS = [
    "<script>alert('xss')</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(2)>",
]


def assert_escaped(html: str, where: str) -> None:
    for payload in PAYLOADS:
        assert payload not in html, f"unescaped markup on {where}"


async def _seed_markup(engine: AsyncEngine) -> dict[str, str]:
    script, attribute, _ = PAYLOADS
    unknown_type = await seeding.start(engine, saga_type=script, principal=attribute)
    declined = await seeding.start(engine, principal=script)
    await seeding.reply(engine, declined, HOLD, "success", {"hold_id": attribute})
    await seeding.reply(engine, declined, CHARGE, "failure", {"reason": script, "note": attribute})
    return {"unknown_type": unknown_type, "declined": declined}


def test_markup_in_saga_type_principal_and_failure_reason_is_escaped(
    make_client: Any, seeded: Seeded
) -> None:
    sagas = seeded.run(_seed_markup)
    client = make_client("olga")
    pages = [
        "/",
        "/overview/panel",
        "/sagas",
        "/sagas?status=compensating",
        "/sagas?status=failed",
        f"/sagas/{sagas['unknown_type']}",
        f"/sagas/{sagas['unknown_type']}/panel",
        f"/sagas/{sagas['declined']}",
        f"/sagas/{sagas['declined']}/panel",
        f"/sagas/{sagas['declined']}/actions/retry",
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert_escaped(response.text, path)
    # A compensating saga cannot be aborted: the refusal names it, escaped like any page.
    refusal = client.get(f"/sagas/{sagas['declined']}/actions/abort")
    assert refusal.status_code == 409
    assert_escaped(refusal.text, "abort refusal")
    detail = client.get(f"/sagas/{sagas['declined']}").text
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in detail, "the reason is shown"


def test_query_parameters_echoed_back_are_escaped(make_client: Any, seeded: Seeded) -> None:
    client = make_client("olga")
    anonymous = make_client(None)
    for payload in PAYLOADS:
        value = quote(payload)
        for path in (
            f"/sagas?type={value}",
            f"/sagas?id={value}",
            f"/sagas?status={value}",
            f"/sagas?age={value}",
            f"/sagas?after={value}",
            f"/sagas/bulk?action=abort&type={value}",
            f"/sagas/bulk?action={value}",
            f"/sagas/{value}",
            f"/sagas/{seeded.waiting}/actions/{value}",
            f"/dead-letters?status={value}",
            f"/dead-letters?topic={value}",
        ):
            response = client.get(path)
            assert response.status_code < 500, path
            assert_escaped(response.text, path)
        login = anonymous.get(f"/login?next={value}")
        assert_escaped(login.text, "/login?next=")


def _send_letters(seeded: Seeded) -> None:
    script, attribute, svg = PAYLOADS

    async def produce() -> None:
        transport = EmbeddedTransport(seeded.settings.messaging)
        await transport.start()
        try:
            await transport.create_topics({"cards.requests": 1, "cards.requests.dlq": 1})
            record = Record(
                topic="cards.requests",
                value=f'{{"amount": "{attribute}"}}'.encode(),
                key=b"saga-xss",
                headers=(
                    ("message-id", script.encode()),
                    ("saga-id", b"saga-xss"),
                    (attribute, svg.encode()),
                ),
                partition=0,
                offset=7,
            )
            await transport.produce([dead_letter(record, f"ValueError: {script}")])
        finally:
            await transport.close()

    asyncio.run(produce())


def test_markup_in_dead_letter_headers_and_errors_is_escaped(
    make_client: Any, seeded: Seeded
) -> None:
    client = make_client("olga", background=True)
    _send_letters(seeded)

    def collected() -> str | None:
        html = client.get("/dead-letters").text
        return html if "saga-xss" in html else None

    listing = eventually_sync(collected, timeout_s=15, what="the dead letter to be collected")
    assert_escaped(listing, "/dead-letters")
    ids = [
        part.split('"')[0]
        for part in listing.split("/dead-letters/")[1:]
        if part.split('"')[0].isdigit()
    ]
    assert ids
    page = client.get(f"/dead-letters/{ids[0]}")
    assert page.status_code == 200
    assert_escaped(page.text, "/dead-letters/{id}")
    assert "ValueError: &lt;script&gt;" in page.text, "the error is shown, escaped"
