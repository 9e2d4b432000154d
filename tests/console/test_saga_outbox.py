"""The saga page's "Messages not yet published": found among the oldest unpublished outbox rows
(outbox rows are not indexed by saga id), gone once published, and a backlog larger than what
is searched is said, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from console.queries import saga as saga_queries
from sagaway.outbox.models import outbox
from tests.console.conftest import Seeded

SECTION = "Messages not yet published"


def _section(html: str) -> str:
    start = html.index(SECTION)
    return html[start : html.index("</section>", start)]


def _row_ids(section: str) -> set[str]:
    return set(re.findall(r"<tr><td>(\d+)</td>", section))


def _publish_all(seeded: Seeded) -> None:
    async def publish(engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.update(outbox).values(published_at=datetime.now(UTC)))

    seeded.run(publish)


def test_the_waiting_sagas_command_is_listed_until_published(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    viewer = make_any_client("vera")

    waiting = _section(viewer.get(f"/sagas/{any_seeded.waiting}").text)
    assert "cards.requests" in waiting and "<table" in waiting
    assert "only the oldest" not in waiting
    # Another saga's unpublished messages (no relay runs here) are not this one's.
    completed = _section(viewer.get(f"/sagas/{any_seeded.completed}").text)
    assert _row_ids(waiting) and _row_ids(completed)
    assert not _row_ids(waiting) & _row_ids(completed)

    _publish_all(any_seeded)

    published = _section(viewer.get(f"/sagas/{any_seeded.waiting}").text)
    assert "<table" not in published
    assert "the relay has published every message" in published


def test_a_backlog_past_what_is_searched_is_said(
    make_client: Any, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = make_client("vera")
    monkeypatch.setattr(saga_queries, "UNPUBLISHED_SEARCHED", 1)

    section = _section(viewer.get(f"/sagas/{seeded.waiting}").text)

    assert "only the oldest" in section
