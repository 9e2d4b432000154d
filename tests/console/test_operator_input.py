"""Operator input limits, alike on SQLite and PostgreSQL: an abort reason (and every free text)
has a length limit and no control characters but newline and tab, a skipped step's result holds
no \\u0000 and has a size limit — each refused with a form error, never a 500, nothing
recorded."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions, saga_instances
from tests.console.conftest import Seeded, csrf_of
from tests.console.sagas import CHARGE


def state_of(seeded: Seeded, saga_id: str) -> tuple[str, int]:
    async def read(engine: AsyncEngine) -> tuple[str, int]:
        async with engine.connect() as conn:
            status = await conn.scalar(
                sa.select(saga_instances.c.status).where(saga_instances.c.id == saga_id)
            )
            audited = await conn.scalar(sa.select(sa.func.count()).select_from(operator_actions))
            return str(status), int(audited or 0)

    return seeded.run(read)  # type: ignore[no-any-return]


def act(client: TestClient, saga_id: str, action: str, **fields: str) -> Any:
    page = client.get(f"/sagas/{saga_id}/actions/{action}?step={CHARGE}")
    assert page.status_code == 200
    return client.post(
        f"/sagas/{saga_id}/actions/{action}", data={"csrf_token": csrf_of(page.text), **fields}
    )


BAD_REASONS = {
    "too long": "x" * 2001,
    "NUL": "payments down\x00",
    "escape": "payments \x1b[31mdown",
    "DEL": "payments\x7fdown",
    "line separator": "payments\u2028down",
}
BAD_RESULTS = {
    "NUL in a string": '{"payment_id": "a\\u0000b"}',
    "NUL in a key": '{"pay\\u0000ment": 1}',
    "NUL deep down": '{"a": [{"b": ["ok", "\\u0000"]}]}',
    "too large": '{"blob": "' + "x" * 70_000 + '"}',
    "too deep": "[" * 2000 + "]" * 2000,
}


@pytest.mark.parametrize("bad", list(BAD_REASONS))
def test_an_abort_reason_too_long_or_with_control_characters_is_a_form_error(
    make_any_client: Any, any_seeded: Seeded, bad: str
) -> None:
    operator = make_any_client("olga")
    response = act(operator, any_seeded.waiting, "abort", reason=BAD_REASONS[bad])
    assert response.status_code == 422, response.text[:300]
    assert 'class="error" role="alert"' in response.text
    assert "the reason" in response.text
    assert state_of(any_seeded, any_seeded.waiting) == ("running", 0)


def test_an_abort_reason_at_the_limit_with_newlines_and_tabs_is_kept(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    reason = ("line one\n\tline two\r\n" * 200)[:2000]
    operator = make_any_client("olga")
    response = act(operator, any_seeded.waiting, "abort", reason=reason)
    assert response.status_code == 200  # followed to the saga page
    assert state_of(any_seeded, any_seeded.waiting) == ("compensating", 1)


@pytest.mark.parametrize("bad", list(BAD_RESULTS))
def test_a_skip_result_with_nul_or_too_large_is_a_form_error(
    make_any_client: Any, any_seeded: Seeded, bad: str
) -> None:
    operator = make_any_client("olga")
    response = act(operator, any_seeded.waiting, "skip", step=CHARGE, result=BAD_RESULTS[bad])
    assert response.status_code == 422, response.text[:300]
    assert "the result" in response.text
    assert state_of(any_seeded, any_seeded.waiting) == ("running", 0)


def test_a_step_name_with_nul_or_too_long_is_a_form_error(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    operator = make_any_client("olga")
    for step in (CHARGE + "\x00", "s" * 201):
        response = act(operator, any_seeded.waiting, "retry", step=step)
        assert response.status_code == 422
        assert "the step" in response.text
    assert state_of(any_seeded, any_seeded.waiting) == ("running", 0)


def test_nul_in_filters_paths_and_login_fields_is_refused_not_a_500(
    make_any_client: Any, any_seeded: Seeded
) -> None:
    operator = make_any_client("olga")
    for path in (
        "/sagas?q=%00",
        "/sagas?type=a%00b",
        "/sagas/%00",
        f"/sagas/{any_seeded.waiting}%00/panel",
        "/sagas/bulk?action=abort&q=%00",
        "/dead-letters?status=%00",
    ):
        response = operator.get(path)
        assert response.status_code == 400, (path, response.status_code)
    token = csrf_of(operator.get("/").text)
    bulk = operator.post("/sagas/bulk", data={"csrf_token": token, "action": "abort", "q": "\x00"})
    assert bulk.status_code == 400
    cursor = operator.get("/sagas?before=MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHwA")  # "...|\x00"
    assert cursor.status_code == 400
    visitor = make_any_client(None)
    login = visitor.post(
        "/login",
        data={
            "csrf_token": csrf_of(visitor.get("/login").text),
            "username": "olga\x00",
            "password": "x",
        },
    )
    assert login.status_code == 400 and "control character" in login.text
    assert state_of(any_seeded, any_seeded.waiting) == ("running", 0)
