"""Skip with the reply model (issue 16, item 8): for a step whose command has a contract, the
Skip form asks for the reply's fields, refuses (422, nothing recorded) a result the reply model
rejects, and after applying the saga page says what the saga did next."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.console.conftest import Seeded, csrf_of, log_in
from tests.console.contract_sagas_seeding import contract_console, start_parcel, waiting_at_pay
from tests.console.test_actions import audit_of, status_of


@pytest.fixture
def olga(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(contract_console(seeded.settings), base_url="https://testserver") as client:
        log_in(client, "olga")
        yield client


def skip_form(client: TestClient, saga_id: str, step: str) -> tuple[str, str]:
    page = client.get(f"/sagas/{saga_id}/actions/skip?step={step}")
    assert page.status_code == 200, page.text
    return page.text, csrf_of(page.text)


def post_skip(client: TestClient, saga_id: str, token: str, step: str,
              **fields: str) -> Any:
    data = {"csrf_token": token, "step": step}
    data.update({k.replace("__", "."): v for k, v in fields.items()})
    return client.post(f"/sagas/{saga_id}/actions/skip", data=data, follow_redirects=False)


def test_the_form_asks_for_the_fields_of_the_steps_reply(olga: TestClient, seeded: Seeded) -> None:
    saga_id = seeded.run(start_parcel)
    html, _ = skip_form(olga, saga_id, "hold")
    assert 'id="reply-fields"' in html
    assert "warehouse.hold → Held" in html
    assert 'name="reply.hold_id"' in html and 'name="reply.shelf"' in html
    assert "hold_id <span class=\"muted\">(string, required)" in html
    assert "shelf <span class=\"muted\">(integer, required)" in html
    assert "The warehouse&#39;s id of the hold" in html
    assert 'name="result"' not in html  # no free JSON for a step with a contract


def test_a_step_without_contract_keeps_the_json_result(olga: TestClient, seeded: Seeded) -> None:
    html, _ = skip_form(olga, seeded.waiting, "charge-card")  # book-trip: plain command names
    assert 'name="result"' in html and 'id="reply-fields"' not in html


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reply__hold_id": "h-9", "reply__shelf": "three"},
         "shelf: &#39;three&#39; is not an integer"),
        ({"reply__hold_id": "", "reply__shelf": "4"}, "hold_id: Field required"),
        ({"reply__hold_id": "h-9", "reply__shelf": "4.5"},
         "shelf: &#39;4.5&#39; is not an integer"),
    ],
)
def test_a_result_the_reply_model_rejects_is_a_form_error_and_nothing_is_recorded(
    olga: TestClient, seeded: Seeded, fields: dict[str, str], message: str
) -> None:
    saga_id = seeded.run(start_parcel)
    _, token = skip_form(olga, saga_id, "hold")
    response = post_skip(olga, saga_id, token, "hold", **fields)
    assert response.status_code == 422
    assert message in response.text
    assert 'name="reply.hold_id"' in response.text  # the form again, with what was typed
    assert f'value="{fields["reply__hold_id"]}"' in response.text
    assert audit_of(seeded, saga_id) == []
    assert status_of(seeded, saga_id) == "running"
    assert "Skipped" not in olga.get(f"/sagas/{saga_id}").text


def test_a_json_result_is_checked_against_the_reply_model_too(
    olga: TestClient, seeded: Seeded
) -> None:
    saga_id = seeded.run(start_parcel)
    _, token = skip_form(olga, saga_id, "hold")
    response = post_skip(olga, saga_id, token, "hold", result='{"hold": "h-9"}')
    assert response.status_code == 422
    assert "does not match the reply of warehouse.hold (Held)" in response.text
    assert "hold_id: Field required" in response.text and "shelf: Field required" in response.text
    assert audit_of(seeded, saga_id) == []


def test_a_valid_reply_is_applied_and_the_page_says_what_the_saga_did_next(
    olga: TestClient, seeded: Seeded
) -> None:
    saga_id = seeded.run(start_parcel)
    _, token = skip_form(olga, saga_id, "hold")
    response = post_skip(olga, saga_id, token, "hold", reply__hold_id="h-9", reply__shelf="4")
    assert response.status_code == 303, response.text
    [entry] = audit_of(seeded, saga_id)
    assert entry["params"] == {"result": {"hold_id": "h-9", "shelf": 4}}
    page = olga.get(response.headers["location"]).text
    assert (
        "Skip step: applied. Skipped hold; the saga then sent mail.notify (step notify), "
        "audit.record (step log) and is running."
    ) in page
    assert "Skipped hold" not in olga.get(response.headers["location"]).text  # said once


def test_skipping_the_pivot_says_the_saga_went_on_past_it(olga: TestClient, seeded: Seeded) -> None:
    saga_id = seeded.run(waiting_at_pay)
    html, token = skip_form(olga, saga_id, "pay")
    assert "billing.pay → Paid" in html and 'name="reply.payment_id"' in html
    response = post_skip(olga, saga_id, token, "pay", reply__payment_id="manual-7")
    assert response.status_code == 303, response.text
    page = olga.get(response.headers["location"]).text
    assert "Skipped pay; the saga then sent printer.label (step label) and is running." in page
