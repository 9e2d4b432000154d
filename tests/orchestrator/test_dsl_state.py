"""Typed saga state (`saga(state=Model)`): the saga's functions get the state model and the typed
reply, the engine still stores a JSON object with only the keys set so far, a state that cannot
start from the input is refused at import, and a wrong return is the saga's own error."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator.dsl import Command, SagaDefinitionError, compensation, saga, step
from orchestrator.testing import refuse, reply, run_saga


class Trip(BaseModel):
    traveller: str
    nights: int


class Booking(Trip):
    model_config = ConfigDict(extra="forbid")

    hotel_ref: str | None = None
    flight_ref: str | None = None
    seen: list[str] = []


class BookRoom(BaseModel):
    guest: str
    nights: int


class Room(BaseModel):
    hotel_ref: str


class CancelRoom(BaseModel):
    hotel_ref: str | None


class BookFlight(BaseModel):
    passenger: str


class Flight(BaseModel):
    flight_ref: str


class Cancelled(BaseModel):
    pass


ROOM = Command("hotel.book", payload=BookRoom, reply=Room)
CANCEL_ROOM = Command("hotel.cancel", payload=CancelRoom, reply=Cancelled)
FLIGHT = Command("airline.book", payload=BookFlight, reply=Flight)

seen_states: list[Any] = []


def _room(b: Booking) -> BookRoom:
    seen_states.append(b)
    return BookRoom(guest=b.traveller, nights=b.nights)


def _roomed(b: Booking, r: Room) -> Booking:
    return b.model_copy(update={"hotel_ref": r.hotel_ref})


def _flight(b: Booking) -> BookFlight:
    return BookFlight(passenger=b.traveller)


def _flown(b: Booking, r: Flight) -> Booking:
    return b.model_copy(update={"flight_ref": r.flight_ref})


def _result(b: Booking) -> dict[str, Any]:
    return {"refs": [b.hotel_ref, b.flight_ref]}


def trip(on_reply: Any = _flown, **options: Any) -> Any:
    return saga(
        "trip", version=1, input=Trip, state=Booking,
        steps=[
            step("room", ROOM, payload=_room, on_reply=_roomed,
                 compensate=compensation(CANCEL_ROOM,
                                         payload=lambda b: CancelRoom(hotel_ref=b.hotel_ref))),
            step("flight", FLIGHT, payload=_flight, on_reply=on_reply, pivot=True),
            # No contract: the payload model is sent as JSON, the reply is the dict.
            step("breakfast", "hotel.breakfast", when=lambda b: b.nights > 1,
                 payload=lambda b: BookRoom(guest=b.traveller, nights=b.nights),
                 on_reply=lambda b, r: b.model_copy(update={"seen": [r["menu"]]})),
        ],
        **options,
    )


SERVICES = {
    "hotel.book": reply({"hotel_ref": "h-1"}),
    "hotel.cancel": reply({}),
    "airline.book": reply({"flight_ref": "f-1"}),
    "hotel.breakfast": reply({"menu": "full"}),
}


def test_the_steps_get_the_state_model_and_the_data_keeps_only_the_keys_set() -> None:
    seen_states.clear()
    run = run_saga(trip(result=_result), {"traveller": "ada", "nights": 2}, SERVICES)

    assert run.status == "completed"
    assert isinstance(seen_states[0], Booking) and seen_states[0].hotel_ref is None
    assert run.payloads("hotel.book") == [{"guest": "ada", "nights": 2}]
    assert run.payloads("hotel.breakfast") == [{"guest": "ada", "nights": 2}]
    assert run.data == {
        "traveller": "ada", "nights": 2, "hotel_ref": "h-1", "flight_ref": "f-1", "seen": ["full"],
    }
    assert run.result == {"refs": ["h-1", "f-1"]}


def test_a_field_never_set_stays_out_of_the_stored_data() -> None:
    run = run_saga(trip(), {"traveller": "ada", "nights": 1}, SERVICES)

    # `seen` has a default and no step set it: not stored, as in an untyped saga.
    assert run.data == {"traveller": "ada", "nights": 1, "hotel_ref": "h-1", "flight_ref": "f-1"}


def test_without_a_result_the_state_is_the_result_and_a_predicate_reads_the_model() -> None:
    run = run_saga(trip(), {"traveller": "ada", "nights": 1}, SERVICES)

    assert run.sent == ["hotel.book", "airline.book"]
    # The whole state model, defaults included.
    assert run.result == {
        "traveller": "ada", "nights": 1, "hotel_ref": "h-1", "flight_ref": "f-1", "seen": [],
    }


def test_a_compensation_payload_reads_the_state() -> None:
    run = run_saga(trip(), {"traveller": "ada", "nights": 1},
                   {**SERVICES, "airline.book": refuse("full")})

    assert run.status == "compensated"
    assert run.payloads("hotel.cancel") == [{"hotel_ref": "h-1"}]


def test_a_reply_handler_returning_something_else_is_the_sagas_own_error() -> None:
    def wrong(b: Booking, r: Flight) -> Any:
        return Trip(traveller="x", nights=1)

    run = run_saga(trip(on_reply=wrong), {"traveller": "ada", "nights": 1}, SERVICES)

    assert run.status == "failed"  # the pivot's outcome is unknown: left for an operator
    assert run.failure is not None
    assert "a Trip was returned where the state Booking was expected" in run.failure["reason"]


def test_a_state_that_cannot_start_from_the_input_is_refused_naming_the_field() -> None:
    class Strict(Trip):
        hotel_ref: str

    with pytest.raises(SagaDefinitionError, match="requires hotel_ref, which the input Trip"):
        saga("trip", version=1, input=Trip, state=Strict,
             steps=[step("room", ROOM, pivot=True)])
    with pytest.raises(SagaDefinitionError, match="state must be a pydantic model class"):
        saga("trip", version=1, input=Trip, state=dict,  # type: ignore[arg-type]
             steps=[step("room", ROOM, pivot=True)])


def test_keys_a_lenient_state_does_not_know_are_kept() -> None:
    class Lenient(Trip):
        model_config = ConfigDict(extra="ignore")
        hotel_ref: str | None = None

    definition = saga(
        "trip", version=1, state=Lenient,
        steps=[step("room", ROOM, payload=_room_of, on_reply=_roomed_lenient, pivot=True)],
    )
    run = run_saga(definition, {"traveller": "ada", "nights": 1, "legacy": "kept"},
                   {"hotel.book": SERVICES["hotel.book"]})

    assert run.data == {"traveller": "ada", "nights": 1, "legacy": "kept", "hotel_ref": "h-1"}


def _room_of(b: Any) -> BookRoom:
    return BookRoom(guest=b.traveller, nights=b.nights)


def _roomed_lenient(b: Any, r: Room) -> Any:
    return b.model_copy(update={"hotel_ref": r.hotel_ref})
