"""The envelope round-trips every field, and refuses every kind of record it cannot trust."""

from __future__ import annotations

import os

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagaway.messaging.envelope import EnvelopeError, Message, command, reply_to
from sagaway.messaging.records import Record

TOPIC = "inventory.requests"


def full_command() -> Message:
    return command(
        "inventory.reserve",
        {"sku": "A-1", "qty": 2, "nested": {"ok": [1, 2.5, None, "é"]}},
        correlation_id="req-1",
        saga_id="saga-1",
        saga_type="place-order",
        saga_step="reserve",
        attempt=3,
        reply_to="orchestrator.replies",
        reply_mode="sync",
        principal="alice",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        extra_headers=(("x-tenant", "acme"),),
    )


def test_a_command_round_trips_through_a_record() -> None:
    original = full_command()
    record = original.to_record(TOPIC)
    assert record.key == b"saga-1"
    assert record.header("attempt") == b"3"
    assert Message.from_record(record) == original


def test_a_reply_round_trips_and_answers_its_command() -> None:
    cmd = full_command()
    reply = reply_to(cmd, "failure", {"reason": "out of stock"})
    parsed = Message.from_record(reply.to_record("orchestrator.replies"))
    assert parsed == reply
    assert parsed.causation_id == cmd.message_id
    assert (parsed.saga_id, parsed.saga_step, parsed.attempt) == ("saga-1", "reserve", 3)


@given(
    payload=st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=5,
    ),
    saga_id=st.none() | st.text(min_size=1, max_size=20),
)
def test_any_json_payload_round_trips(payload: dict[str, object], saga_id: str | None) -> None:
    message = Message(message_type="event", payload=payload, saga_id=saga_id)
    assert Message.from_record(message.to_record("x.events")) == message


def good_headers(**changes: bytes | None) -> tuple[tuple[str, bytes], ...]:
    headers = dict(full_command().to_record(TOPIC).headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return tuple(headers.items())


def record(value: bytes = b'{"sku": "A-1"}', key: bytes | None = b"saga-1", headers=None) -> Record:  # type: ignore[no-untyped-def]
    return Record(
        topic=TOPIC, key=key, value=value, headers=good_headers() if headers is None else headers
    )


MALFORMED = {
    "random bytes": (record(value=os.urandom(32) + b"\xff"), "not UTF-8 JSON"),
    "empty value": (record(value=b""), "not UTF-8 JSON"),
    "invalid JSON": (record(value=b'{"sku": '), "not UTF-8 JSON"),
    "JSON that is not an object": (record(value=b"[1, 2]"), "must be a JSON object"),
    "no headers at all": (
        record(headers=()),
        "missing header(s): message-id, message-type, sent-at",
    ),
    "missing message-id": (
        record(headers=good_headers(message_id=None)),
        "missing header(s): message-id",
    ),
    "message-id not a UUID": (record(headers=good_headers(message_id=b"42")), "not a UUID"),
    "unknown message-type": (record(headers=good_headers(message_type=b"query")), "message-type"),
    "header not UTF-8": (
        record(headers=good_headers(saga_step=b"\xff\xfe")),
        "saga-step is not UTF-8",
    ),
    "header without a value": (
        record(headers=good_headers(principal=None) + (("principal", None),)),
        "no value",
    ),  # type: ignore[operator]
    "attempt not an integer": (
        record(headers=good_headers(attempt=b"x")),
        "attempt is not an integer",
    ),
    "attempt not positive": (record(headers=good_headers(attempt=b"0")), "positive integer"),
    "bad sent-at": (record(headers=good_headers(sent_at=b"yesterday")), "RFC 3339"),
    "command without a name": (record(headers=good_headers(command=None)), "command header"),
    "bad reply-mode": (record(headers=good_headers(reply_mode=b"later")), "reply-mode"),
    "duplicate header": (
        record(headers=good_headers() + (("saga-id", b"saga-2"),)),
        "appears twice",
    ),
    "key differs from saga-id": (record(key=b"saga-2"), "differs from saga-id"),
    "saga-id without a key": (record(key=None), "differs from saga-id"),
    "reply without outcome": (
        record(headers=good_headers(message_type=b"reply", causation_id=b"c")),
        "outcome",
    ),
    "reply without causation-id": (
        record(headers=good_headers(message_type=b"reply", outcome=b"success")),
        "causation-id",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_record_raises_envelope_error_saying_why(case: str) -> None:
    bad, reason = MALFORMED[case]
    with pytest.raises(EnvelopeError) as error:
        Message.from_record(bad)
    assert reason in str(error.value)


def test_the_good_record_the_malformed_ones_derive_from_parses() -> None:
    assert Message.from_record(record()).payload == {"sku": "A-1"}


@given(
    value=st.binary(max_size=64),
    headers=st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=40)), max_size=6),
)
def test_arbitrary_bytes_either_parse_or_raise_envelope_error(
    value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    try:
        message = Message.from_record(Record(topic=TOPIC, value=value, headers=tuple(headers)))
    except EnvelopeError:
        return
    assert isinstance(message.payload, dict)
    assert orjson.loads(value) == message.payload


def test_building_an_invalid_message_raises_envelope_error() -> None:
    with pytest.raises(EnvelopeError):
        command("no-dot", {})
    with pytest.raises(EnvelopeError):
        Message(message_type="event", payload=[1])  # type: ignore[arg-type]
