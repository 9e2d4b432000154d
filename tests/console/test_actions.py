"""Operator actions through the console: confirmation pages (offered only where the saga's status
allows), CSRF, roles, the audit log, the engine (orchestrator.operator_actions) doing the work,
and the saga page saying what the saga did next. Bulk actions: test_bulk_actions.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions, saga_instances
from tests.console import seeding
from tests.console.conftest import Seeded, csrf_of, log_in
from tests.console.contract_sagas_seeding import answer, contract_console, waiting_at_pay
from tests.console.sagas import CHARGE, ISSUE


def status_of(seeded: Seeded, saga_id: str) -> str:
    async def read(engine: AsyncEngine) -> str:
        async with engine.connect() as conn:
            return str(
                await conn.scalar(
                    sa.select(saga_instances.c.status).where(saga_instances.c.id == saga_id)
                )
            )

    return str(seeded.run(read))


def audit_of(seeded: Seeded, saga_id: str) -> list[dict[str, Any]]:
    async def read(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(operator_actions).where(operator_actions.c.saga_id == saga_id)
            )
            return [dict(r) for r in rows.mappings()]

    return list(seeded.run(read))


def confirm(client: TestClient, saga_id: str, action: str, query: str = "") -> str:
    page = client.get(f"/sagas/{saga_id}/actions/{action}{query}")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def test_operator_sees_the_actions_a_viewer_does_not(
    operator: TestClient, viewer: TestClient, seeded: Seeded
) -> None:
    html = operator.get(f"/sagas/{seeded.waiting}").text
    assert 'id="actions"' in html and "Abort (compensate now)" in html
    assert f"Retry {CHARGE} now" in html and f"Skip {CHARGE}" in html
    assert 'id="actions"' not in viewer.get(f"/sagas/{seeded.waiting}").text


def test_abort_needs_confirmation_then_compensates_and_is_audited(
    operator: TestClient, seeded: Seeded
) -> None:
    token = confirm(operator, seeded.waiting, "abort")
    assert status_of(seeded, seeded.waiting) == "running"  # the confirmation page changed nothing
    response = operator.post(
        f"/sagas/{seeded.waiting}/actions/abort",
        data={"csrf_token": token, "reason": "customer called"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert status_of(seeded, seeded.waiting) == "compensating"
    [entry] = audit_of(seeded, seeded.waiting)
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("olga", "abort", "applied")
    assert entry["params"] == {"reason": "customer called"}
    page = operator.get(response.headers["location"])
    assert "Abort (compensate now): applied." in page.text
    assert 'id="audit"' in page.text and "olga" in page.text and "customer called" in page.text


def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(
    operator: TestClient, seeded: Seeded
) -> None:
    for data in ({}, {"csrf_token": "forged"}):
        response = operator.post(f"/sagas/{seeded.waiting}/actions/abort", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert status_of(seeded, seeded.waiting) == "running"
    assert audit_of(seeded, seeded.waiting) == []


def test_a_viewer_cannot_act(viewer: TestClient, seeded: Seeded) -> None:
    assert viewer.get(f"/sagas/{seeded.waiting}/actions/abort").status_code == 403
    token = csrf_of(viewer.get("/").text)
    response = viewer.post(f"/sagas/{seeded.waiting}/actions/abort", data={"csrf_token": token})
    assert response.status_code == 403 and "only an operator" in response.text
    bulk = viewer.post("/sagas/bulk", data={"csrf_token": token, "action": "abort"})
    assert bulk.status_code == 403
    assert status_of(seeded, seeded.waiting) == "running"
    assert audit_of(seeded, seeded.waiting) == []


def test_retry_sends_the_step_again_as_a_new_attempt(operator: TestClient, seeded: Seeded) -> None:
    token = confirm(operator, seeded.waiting, "retry", f"?step={CHARGE}")
    response = operator.post(
        f"/sagas/{seeded.waiting}/actions/retry",
        data={"csrf_token": token, "step": CHARGE},
        follow_redirects=False,
    )
    assert response.status_code == 303
    html = operator.get(f"/sagas/{seeded.waiting}").text
    assert html.count(f"{CHARGE}</td>") >= 2  # attempt 1 and the retry
    [entry] = audit_of(seeded, seeded.waiting)
    assert (entry["action"], entry["step"], entry["outcome"]) == (
        "retry",
        CHARGE,
        "applied",
    )


def test_skip_takes_a_json_result_and_refuses_anything_else(
    operator: TestClient, seeded: Seeded
) -> None:
    token = confirm(operator, seeded.waiting, "skip", f"?step={CHARGE}")
    for bad in ("not json", "[1, 2]"):
        response = operator.post(
            f"/sagas/{seeded.waiting}/actions/skip",
            data={"csrf_token": token, "step": CHARGE, "result": bad},
        )
        assert response.status_code == 422
        assert "JSON" in response.text
    assert status_of(seeded, seeded.waiting) == "running"
    response = operator.post(
        f"/sagas/{seeded.waiting}/actions/skip",
        data={"csrf_token": token, "step": CHARGE, "result": '{"payment_id": "manual"}'},
        follow_redirects=False,
    )
    assert response.status_code == 303
    [entry] = audit_of(seeded, seeded.waiting)
    assert entry["params"] == {"result": {"payment_id": "manual"}}
    html = operator.get(f"/sagas/{seeded.waiting}").text
    assert ISSUE in html  # it moved on to the next step


def test_an_action_the_saga_refuses_is_shown_and_recorded_as_rejected(
    operator: TestClient, seeded: Seeded
) -> None:
    token = csrf_of(operator.get(f"/sagas/{seeded.completed}").text)
    response = operator.post(
        f"/sagas/{seeded.completed}/actions/resume", data={"csrf_token": token}
    )
    assert response.status_code == 409
    assert "cannot resume" in response.text
    [entry] = audit_of(seeded, seeded.completed)
    assert entry["outcome"] == "rejected"
    assert status_of(seeded, seeded.completed) == "completed"


def test_unknown_action_or_saga(operator: TestClient, seeded: Seeded) -> None:
    assert operator.get(f"/sagas/{seeded.waiting}/actions/explode").status_code == 404
    token = csrf_of(operator.get("/").text)
    response = operator.post("/sagas/nope/actions/abort", data={"csrf_token": token})
    assert response.status_code == 404


def test_resume_a_failed_saga_sends_what_failed_again(operator: TestClient, seeded: Seeded) -> None:
    saga_id = seeded.run(seeding.failed_compensation)
    page = operator.get(f"/sagas/{saga_id}")
    assert "Why it is stuck" in page.text and "Resume" in page.text
    token = confirm(operator, saga_id, "resume")
    response = operator.post(
        f"/sagas/{saga_id}/actions/resume", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert status_of(seeded, saga_id) == "compensating"
    [entry] = audit_of(seeded, saga_id)
    assert (entry["action"], entry["actor"], entry["outcome"]) == ("resume", "olga", "applied")
    html = operator.get(f"/sagas/{saga_id}").text
    assert html.count("kind-compensation") >= 2  # the failed release, and the one resumed


@pytest.mark.parametrize(
    ("saga", "action", "why"),
    [
        ("completed", "abort", "the saga is completed: only a running saga can be aborted"),
        ("completed", "retry", "only a running or compensating saga has a step to retry"),
        ("waiting", "resume", "the saga is running: only a failed saga can be resumed"),
    ],
)
def test_an_action_the_status_does_not_allow_is_not_offered_for_confirmation(
    operator: TestClient, seeded: Seeded, saga: str, action: str, why: str
) -> None:
    saga_id = getattr(seeded, saga)
    page = operator.get(f"/sagas/{saga_id}/actions/{action}")
    assert page.status_code == 409
    assert 'id="not-offered"' in page.text and why in page.text
    assert 'id="confirm"' not in page.text
    assert f'action="/sagas/{saga_id}/actions/{action}"' not in page.text
    assert audit_of(seeded, saga_id) == []


def outcome_of_page(html: str) -> tuple[str, str]:
    """The colour (status class) and headline of the saga page's action outcome."""
    match = re.search(
        r'<span class="status status-([a-z_]+)" id="action-outcome">([^<]+)</span>', html
    )
    assert match, "no action outcome on the page"
    return match.group(1), match.group(2)


def test_after_abort_the_page_says_now_compensating_in_that_colour(
    operator: TestClient, seeded: Seeded
) -> None:
    token = confirm(operator, seeded.waiting, "abort")
    response = operator.post(
        f"/sagas/{seeded.waiting}/actions/abort",
        data={"csrf_token": token, "reason": "customer called"},
        follow_redirects=False,
    )
    html = operator.get(response.headers["location"]).text
    assert outcome_of_page(html) == ("compensating", "now compensating")
    assert "Abort (compensate now): applied. The saga then sent" in html
    assert "compensation of" in html
    # Said once: a reload of the same GET page neither repeats the action nor the sentence.
    again = operator.get(response.headers["location"]).text
    assert 'id="action-outcome"' not in again
    assert len(audit_of(seeded, seeded.waiting)) == 1


def test_after_retry_the_page_says_which_step_is_retried(
    operator: TestClient, seeded: Seeded
) -> None:
    token = confirm(operator, seeded.waiting, "retry", f"?step={CHARGE}")
    response = operator.post(
        f"/sagas/{seeded.waiting}/actions/retry",
        data={"csrf_token": token, "step": CHARGE},
        follow_redirects=False,
    )
    html = operator.get(response.headers["location"]).text
    assert outcome_of_page(html) == ("running", f"retrying step {CHARGE}")
    assert f"(step {CHARGE}, attempt 2) and is running." in html


def test_after_resume_the_page_says_what_was_sent_again(
    operator: TestClient, seeded: Seeded
) -> None:
    saga_id = seeded.run(seeding.failed_compensation)
    token = confirm(operator, saga_id, "resume")
    response = operator.post(
        f"/sagas/{saga_id}/actions/resume", data={"csrf_token": token}, follow_redirects=False
    )
    html = operator.get(response.headers["location"]).text
    assert outcome_of_page(html) == ("compensating", "now compensating")
    assert "Resume: applied. The saga then sent" in html


def test_abort_is_not_offered_once_the_pivot_has_succeeded(seeded: Seeded) -> None:
    saga_id = seeded.run(waiting_at_pay)

    async def pay(engine: AsyncEngine) -> str:
        return await answer(engine, saga_id, "pay", {"payment_id": "p-1"})

    assert seeded.run(pay) == "running"
    with TestClient(contract_console(seeded.settings), base_url="https://testserver") as client:
        log_in(client, "olga")
        page = client.get(f"/sagas/{saga_id}/actions/abort")
        saga_page = client.get(f"/sagas/{saga_id}").text
    assert page.status_code == 409
    assert "its pivot step has succeeded: the saga can only go forward" in page.text
    assert 'id="confirm"' not in page.text
    # The saga's own page does not offer it either, and says why.
    assert 'id="abort"' not in saga_page
    assert "No abort: its pivot step has succeeded" in saga_page
