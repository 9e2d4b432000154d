"""The test kit for saga authors (orchestrator.testing, docs/sagas.md §9): scripted participants
against the pure engine, in virtual time."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from orchestrator.dsl import Backoff, SagaDefinition, compensation, parallel, saga, step
from orchestrator.engine.rules import message_id_for
from orchestrator.testing import (
    SagaRun,
    refuse,
    reply,
    reply_late,
    reply_twice,
    run_saga,
    time_out,
)


class Trip(BaseModel):
    traveller: str
    nights: int


def trip(**policy: Any) -> SagaDefinition:
    """hold (undo: release) -> pay (undo: refund) -> issue (the pivot) -> mail (retriable)."""
    return saga(
        "trip",
        version=1,
        input=Trip,
        timeout=10,
        retries=2,
        backoff=Backoff(initial=1, multiplier=2, max=10, jitter=0),
        steps=[
            step("hold", "rooms.hold", payload=lambda d: {"nights": d["nights"]},
                 on_reply=lambda d, r: {**d, "room": r["room"]}, compensate="rooms.release"),
            step("pay", "cards.charge", on_reply=lambda d, r: {**d, "charge": r["charge"]},
                 compensate=compensation("cards.refund", retries=0)),
            step("issue", "tickets.issue", pivot=True, **policy),
            step("mail", "mail.send"),
        ],
        result=lambda d: {"room": d["room"], "charge": d["charge"]},
    )


TRAVELLER = {"traveller": "ada", "nights": 2}
OK = {
    "rooms.hold": reply({"room": "r-7"}),
    "cards.charge": reply({"charge": "c-1"}),
}


def test_replies_drive_the_saga_to_its_result_in_order() -> None:
    run = run_saga(trip(), TRAVELLER, OK)
    assert run.status == "completed"
    assert run.sent == ["rooms.hold", "cards.charge", "tickets.issue", "mail.send"]
    assert run.result == {"room": "r-7", "charge": "c-1"}
    assert run.payloads("rooms.hold") == [{"nights": 2}]
    assert run.compensations == [] and run.ignored == []
    assert run.final is not None and run.final.status == "completed"


def test_an_answer_can_be_computed_from_the_command_payload() -> None:
    echo = reply(lambda payload: {"room": f"room-for-{payload['nights']}"})
    run = run_saga(trip(), TRAVELLER, {**OK, "rooms.hold": echo})
    assert run.data["room"] == "room-for-2"


def test_a_refusal_compensates_newest_first_with_its_reason() -> None:
    run = run_saga(trip(), TRAVELLER, {**OK, "tickets.issue": refuse("sold out", code=7)})
    assert run.status == "compensated"
    assert run.compensations == ["cards.refund", "rooms.release"]
    assert run.failure == {"step": "issue", "reason": "sold out"}
    (failed,) = [r for r in run.records if r.status == "failed"]
    assert failed.payload == {"reason": "sold out", "code": 7}


def test_time_out_re_sends_by_the_saga_policy_in_virtual_time_then_gives_up() -> None:
    run = run_saga(trip(), TRAVELLER, {**OK, "cards.charge": time_out()})
    charges = [c for c in run.commands if c.command == "cards.charge"]
    assert [c.attempt for c in charges] == [1, 2, 3]  # retries=2
    assert {c.message_id for c in charges} == {message_id_for("saga-1", "forward", "pay")}
    assert run.failure == {"step": "pay", "reason": "no reply after 3 attempt(s)"}
    assert run.compensations == ["cards.refund", "rooms.release"]  # unknown: undone too
    # Three 10 s timeouts and backoffs of 1 s and 2 s, plus the replies' latency; the
    # compensations' timers, deleted when the saga ended, never move the clock.
    assert 33.0 <= run.now < 33.1


def test_one_behaviour_per_attempt_the_last_repeating() -> None:
    run = run_saga(trip(), TRAVELLER, {**OK, "rooms.hold": [time_out(), reply({"room": "r-2"})]})
    assert run.sent[:2] == ["rooms.hold", "rooms.hold"]
    assert run.status == "completed" and run.data["room"] == "r-2"


def test_a_reply_delivered_twice_counts_once() -> None:
    run = run_saga(trip(), TRAVELLER, {**OK, "rooms.hold": reply_twice({"room": "r-7"})})
    assert run.status == "completed"
    (ignored,) = run.ignored
    assert ignored.step == "hold" and "not awaiting" in (ignored.error or "")


def test_a_late_reply_is_ignored_and_with_no_re_send_the_step_is_undone() -> None:
    late = saga("late", version=1, steps=[
        step("hold", "rooms.hold", compensate="rooms.release", retries=0),
        step("pay", "cards.charge", pivot=True),
    ])
    run = run_saga(late, {}, {"rooms.hold": reply_late({"room": "r-late"})})
    assert run.status == "compensated"
    assert run.sent == ["rooms.hold", "rooms.release"]
    (ignored,) = run.ignored
    assert ignored.step == "hold" and "unknown, not awaiting" in (ignored.error or "")


def test_a_late_reply_then_an_answered_re_send() -> None:
    run = run_saga(trip(), TRAVELLER, {
        **OK, "rooms.hold": [reply_late({"room": "late"}), reply({"room": "r-1"})],
    })
    assert run.data["room"] == "r-1"
    assert [r.attempt for r in run.ignored] == [1]


def test_parallel_branches_and_a_refused_branch() -> None:
    group = saga("group", version=1, steps=[
        parallel(
            "book",
            step("hotel", "hotels.book", compensate="hotels.cancel"),
            step("car", "cars.book", compensate="cars.cancel"),
        ),
        step("pay", "cards.charge", pivot=True),
    ])
    run = run_saga(group, {}, {"cars.book": refuse("no cars")})
    assert run.sent == ["hotels.book", "cars.book", "hotels.cancel"]
    assert run.status == "compensated"


def test_a_refused_compensation_leaves_the_saga_failed() -> None:
    run = run_saga(trip(), TRAVELLER, {
        **OK, "tickets.issue": refuse("sold out"), "cards.refund": refuse("card closed"),
    })
    assert run.status == "failed"
    # Stored with the saga: what started it all; answered to the client: what stopped it.
    assert run.failure == {"step": "issue", "reason": "sold out"}
    assert run.final is not None
    assert run.final.failure == {"step": "pay", "reason": "compensation failed: card closed"}


def test_unscripted_commands_get_the_default() -> None:
    run = run_saga(trip(), TRAVELLER, OK, default=refuse("down"))
    assert run.failure == {"step": "issue", "reason": "down"}


def test_a_command_the_saga_never_sends_is_an_error() -> None:
    with pytest.raises(ValueError, match="sends no command 'card.charge'; it sends "):
        run_saga(trip(), TRAVELLER, {"card.charge": reply()})


def test_the_input_is_validated_as_the_gateway_does() -> None:
    with pytest.raises(ValidationError):
        run_saga(trip(), {"traveller": "ada"}, OK)
    assert run_saga(trip(), Trip(traveller="ada", nights=1), OK).status == "completed"


def test_data_that_would_not_survive_storage_as_json_fails_the_test() -> None:
    broken = saga("broken", version=1, steps=[
        step("a", "svc.a", on_reply=lambda d, r: {**d, "at": {1, 2}}, pivot=True),
    ])
    with pytest.raises(AssertionError, match="not JSON"):
        run_saga(broken, {})
    tupled = saga("tupled", version=1, steps=[
        step("a", "svc.a", on_reply=lambda d, r: {**d, "pair": (1, 2)}, pivot=True),
    ])
    with pytest.raises(AssertionError, match="changes when stored as JSON"):
        run_saga(tupled, {})


def test_operators_resume_skip_and_retry_a_failed_saga() -> None:
    run = run_saga(trip(), TRAVELLER, {**OK, "mail.send": refuse("smtp down")})
    assert run.status == "failed" and run.compensations == []  # after the pivot
    assert run.abort() == "the saga is failed"
    run.script("mail.send", reply())
    assert run.retry("mail") is None
    assert run.status == "completed"

    run = run_saga(trip(), TRAVELLER, {**OK, "mail.send": refuse("smtp down")})
    assert run.skip("mail", {}) is None
    assert run.status == "completed" and run.sent.count("mail.send") == 1


def test_until_pauses_a_run_for_an_abort() -> None:
    def charged(run: SagaRun) -> bool:
        return "cards.charge" in run.sent

    run = run_saga(trip(), TRAVELLER, OK, until=charged)
    assert run.status == "running"
    assert run.abort("customer cancelled") is None
    assert run.status == "compensated"
    assert run.compensations == ["cards.refund", "rooms.release"]
    assert run.failure == {"step": "pay", "reason": "customer cancelled"}
    # The charge's reply, already on its way, arrives after the abort and is ignored.
    assert [r.step for r in run.ignored] == ["pay"]


def test_a_run_is_deterministic() -> None:
    scripts = {**OK, "cards.charge": [time_out(), reply({"charge": "c"})]}
    first, second = run_saga(trip(), TRAVELLER, scripts), run_saga(trip(), TRAVELLER, scripts)
    assert first.commands == second.commands and first.records == second.records


def test_the_kit_needs_no_broker_database_or_event_loop() -> None:
    code = (
        "import sys, orchestrator.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sagaway', 'sqlalchemy', 'aiokafka', 'asyncio', 'asyncpg', 'starlette'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
