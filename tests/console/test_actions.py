"""Operator actions through the console: confirmation pages, CSRF, roles, the audit log, and the
engine (orchestrator.operator_actions) doing the work."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.testclient import TestClient

from orchestrator.models import operator_actions, saga_instances
from tests.console import seeding
from tests.console.conftest import Seeded, csrf_of
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
    token = confirm(operator, seeded.completed, "resume")
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


def test_bulk_abort_shows_the_count_then_aborts_the_filtered_running_sagas(
    operator: TestClient, seeded: Seeded
) -> None:
    others = [seeded.run(seeding.waiting_at_charge) for _ in range(2)]
    page = operator.get("/sagas/bulk?action=abort&status=running")
    assert page.status_code == 200
    assert '<p class="count" id="bulk-count">3 sagas match.</p>' in page.text
    narrowed = operator.get("/sagas/bulk?action=abort&status=running&q=bob")
    assert "3 sagas match." in narrowed.text  # all three are bob's
    response = operator.post(
        "/sagas/bulk",
        data={"csrf_token": csrf_of(page.text), "action": "abort", "status": "running"},
    )
    assert response.status_code == 200
    assert "Applied to 3 sagas; refused for 0." in response.text
    for saga_id in [seeded.waiting, *others]:
        assert status_of(seeded, saga_id) == "compensating"
        assert [e["action"] for e in audit_of(seeded, saga_id)] == ["abort"]
    assert status_of(seeded, seeded.completed) == "completed"


def test_bulk_retry_retries_each_current_step(operator: TestClient, seeded: Seeded) -> None:
    page = operator.get(f"/sagas/bulk?action=retry&q={seeded.waiting}")
    assert "1 saga matches." in page.text
    response = operator.post(
        "/sagas/bulk",
        data={"csrf_token": csrf_of(page.text), "action": "retry", "q": seeded.waiting},
    )
    assert "Applied to 1 saga; refused for 0." in response.text
    [entry] = audit_of(seeded, seeded.waiting)
    assert (entry["action"], entry["step"]) == ("retry", CHARGE)


def test_bulk_without_csrf_is_refused(operator: TestClient, seeded: Seeded) -> None:
    response = operator.post("/sagas/bulk", data={"action": "abort", "status": "running"})
    assert response.status_code == 403
    assert status_of(seeded, seeded.waiting) == "running"


def test_bulk_abort_on_a_status_that_cannot_be_aborted_matches_nothing(
    operator: TestClient, seeded: Seeded
) -> None:
    page = operator.get("/sagas/bulk?action=abort&status=completed")
    assert '<p class="count" id="bulk-count">0 sagas match.</p>' in page.text
    response = operator.post(
        "/sagas/bulk",
        data={"csrf_token": csrf_of(page.text), "action": "abort", "status": "completed"},
    )
    assert "Applied to 0 sagas; refused for 0." in response.text
    assert status_of(seeded, seeded.waiting) == "running"
    assert audit_of(seeded, seeded.waiting) == []


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
