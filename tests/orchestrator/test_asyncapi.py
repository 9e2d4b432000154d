"""The AsyncAPI document (issue 16, item 5): generated from the registered sagas' contracts,
valid against the official AsyncAPI 3.0 JSON Schema (vendored from the npm package
@asyncapi/specs in tests/vendor/asyncapi), served by the gateway at /asyncapi.json."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from examples.place_order import SAGA_MODULES
from examples.place_order.saga import place_order
from gateway.auth import hash_api_key
from orchestrator.asyncapi import asyncapi_document
from orchestrator.registry import SagaRegistry
from tests.gateway.conftest import (  # noqa: F401 (the gateway fixtures)
    MakeGateway,
    gateway_settings,
    make_gateway,
)
from tests.orchestrator.contract_sagas import HOLD, ship_parcel

SCHEMA = Path(__file__).resolve().parents[1] / "vendor/asyncapi/asyncapi-3.0.0.schema.json"


@cache
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = orjson.loads(SCHEMA.read_bytes())
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    return jsonschema.Draft7Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in asyncapi_validator().iter_errors(document)
    ]


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def payload_validator(document: dict[str, Any], message: str) -> jsonschema.Validator:
    """A validator of one message's payload, resolving its refs inside the document."""
    payload = document["components"]["messages"][message]["payload"]
    schema = {**payload, "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(SagaRegistry([ship_parcel, place_order]), topic_prefix="acme.")


def test_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert schema_errors(document) == []


def test_the_vendored_schema_refuses_a_broken_document(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["send.warehouse.hold"]["action"] = "publish"  # AsyncAPI 2's verb
    del broken["channels"]["warehouse.requests"]["messages"]["warehouse.hold"]["$ref"]
    broken["channels"]["warehouse.requests"]["messages"]["warehouse.hold"]["payload"] = 7
    errors = schema_errors(broken)
    assert any(e.startswith("operations/send.warehouse.hold") for e in errors), errors
    assert any(e.startswith("channels/warehouse.requests") for e in errors), errors


def test_every_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = refs(document)
    assert len(found) > 40
    for ref in found:
        resolve(document, ref)


def test_request_and_reply_channels_are_the_prefixed_topics(document: dict[str, Any]) -> None:
    addresses = {name: c["address"] for name, c in document["channels"].items()}
    assert addresses == {
        "orchestrator.requests": "acme.orchestrator.requests",
        "orchestrator.replies": "acme.orchestrator.replies",
        "warehouse.requests": "acme.warehouse.requests",
        "mail.requests": "acme.mail.requests",
        "audit.requests": "acme.audit.requests",
        "billing.requests": "acme.billing.requests",
        "printer.requests": "acme.printer.requests",
        "inventory.requests": "acme.inventory.requests",
        "payments.requests": "acme.payments.requests",
        "shipping.requests": "acme.shipping.requests",
        "final-replies": None,
    }
    assert "acme.gateway.replies" in document["channels"]["final-replies"]["description"]
    warehouse = document["channels"]["warehouse.requests"]["messages"]
    assert set(warehouse) == {"warehouse.hold", "warehouse.unhold"}
    replies = document["channels"]["orchestrator.replies"]["messages"]
    assert {"warehouse.hold.reply", "warehouse.hold.refusal", "billing.pay.refusal"} <= set(replies)
    operation = document["operations"]["send.warehouse.hold"]
    assert operation["action"] == "send"
    assert resolve(document, operation["reply"]["channel"]["$ref"])["address"] == (
        "acme.orchestrator.replies"
    )


def test_payload_schemas_come_from_the_contracts(document: dict[str, Any]) -> None:
    hold = payload_validator(document, "warehouse.hold")
    assert hold.is_valid(HOLD.dump_payload({"parcel_id": "p-1"}))
    assert not hold.is_valid({"parcel": "p-1"})  # the field is parcel_id
    held = payload_validator(document, "warehouse.hold.reply")
    assert held.is_valid({"hold_id": "h-1", "shelf": 4})
    assert not held.is_valid({"hold_id": "h-1"})  # shelf is required
    refusal = payload_validator(document, "billing.pay.refusal")
    assert refusal.is_valid({"reason": "no funds", "missing_cents": 12})
    assert not refusal.is_valid({"reason": "no funds", "missing_cents": "twelve"})
    assert not refusal.is_valid({"missing_cents": 12})  # a refusal always says why
    start = payload_validator(document, "start.ship-parcel")
    assert start.is_valid({"parcel_id": "p-1", "weight_g": 100})
    assert not start.is_valid({"parcel_id": "p-1", "weight_g": 0})


def test_a_command_without_contract_is_listed_with_an_open_payload(
    document: dict[str, Any],
) -> None:
    label = document["components"]["messages"]["printer.label"]
    assert label["payload"] == {"type": "object"}
    assert "No contract is declared" in label["summary"]
    assert "ship-parcel v1: step label" in label["summary"]


def test_messages_carry_the_envelope_headers(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    command = messages["warehouse.hold"]["headers"]
    assert command["properties"]["command"]["const"] == "warehouse.hold"
    assert command["properties"]["message-type"]["const"] == "command"
    assert {"saga-id", "saga-step", "attempt", "reply-to", "traceparent", "principal"} <= set(
        command["properties"]
    )
    reply = messages["warehouse.hold.refusal"]["headers"]
    assert reply["properties"]["outcome"]["const"] == "failure"
    assert "causation-id" in reply["properties"]
    assert messages["warehouse.hold.reply"]["correlationId"]["location"] == (
        "$message.header#/causation-id"
    )
    start = messages["start.place-order"]["headers"]["properties"]
    assert start["command"]["const"] == "orchestrator.start"
    assert start["saga-type"]["const"] == "place-order"
    headers = jsonschema.Draft202012Validator(messages["warehouse.hold"]["headers"])
    assert headers.is_valid({
        "message-id": "0b9a3c1e-7d1f-4c55-9b1e-1f0a3b2c4d5e", "message-type": "command",
        "command": "warehouse.hold", "sent-at": "2026-01-01T00:00:00Z", "attempt": "2",
    })
    assert not headers.is_valid({
        "message-id": "0b9a3c1e-7d1f-4c55-9b1e-1f0a3b2c4d5e", "message-type": "command",
        "command": "warehouse.hold", "sent-at": "2026-01-01T00:00:00Z", "attempt": "0",
    })


@pytest.fixture
def stack() -> str:
    """The gateway fixtures on the embedded broker only: the document does not depend on it."""
    return "embedded"


async def test_gateway_serves_the_document(make_gateway: MakeGateway) -> None:  # noqa: F811
    running = await make_gateway(
        "gw-asyncapi", sagas=[*SAGA_MODULES, "tests.orchestrator.contract_sagas"]
    )
    answer = await running.client.get("/asyncapi.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert schema_errors(document) == []
    prefix = running.transport.settings.topic_prefix
    assert prefix  # the test settings use a prefix, so the addresses show it
    channels = document["channels"]
    assert channels["warehouse.requests"]["address"] == f"{prefix}warehouse.requests"
    assert channels["inventory.requests"]["address"] == f"{prefix}inventory.requests"
    assert {"start.place-order", "start.ship-parcel"} <= set(
        channels["orchestrator.requests"]["messages"]
    )


async def test_gateway_asks_for_credentials_when_authentication_is_on(
    make_gateway: MakeGateway,  # noqa: F811
) -> None:
    running = await make_gateway("gw-asyncapi-auth", api_keys={"shop": hash_api_key("k-1")})
    assert (await running.client.get("/asyncapi.json")).status_code == 401
    answer = await running.client.get("/asyncapi.json", headers={"X-API-Key": "k-1"})
    assert answer.status_code == 200
    assert schema_errors(answer.json()) == []


def test_place_orders_commands_carry_their_contract_schemas(document: dict[str, Any]) -> None:
    contracts = place_order.contracts
    assert {"inventory.reserve", "payments.charge", "shipping.schedule"} <= set(contracts)
    messages = document["components"]["messages"]
    for name, contract in contracts.items():
        for key, model in ((name, contract.payload), (f"{name}.reply", contract.reply)):
            payload = messages[key]["payload"]
            assert payload["$ref"].startswith("#/components/schemas/"), (key, payload)
            schema = resolve(document, payload["$ref"])
            assert set(schema.get("properties", {})) == set(model.model_json_schema().get(
                "properties", {})), key
