"""The AsyncAPI 3.0 document of the registered sagas, from the orchestrator's side: the start
commands it receives, the commands and compensations it sends to each service's request topic,
the replies it reads back, and the final reply. Payload schemas come from the command contracts
(`Command`), headers from the envelope (docs/messages.md). Pure: definitions in, a JSON-ready
dict out; `GET /asyncapi.json` and `sagaway asyncapi` serve it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrator.asyncapi_headers import COMMAND, FINAL_REPLY, REPLY, START, headers_schema
from orchestrator.dsl import Command, SagaDefinition
from sagaway.messaging.topics import TopicNames

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_REF = "#/components/schemas/{model}"
ORCHESTRATOR = "orchestrator"
START_COMMAND = "orchestrator.start"
ANY_OBJECT: dict[str, Any] = {"type": "object"}
REASON: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description": "Why the command was refused"}},
    "required": ["reason"],
}
FINAL_REPLY_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "saga_id": {"type": "string"},
        "saga_type": {"type": "string"},
        "status": {"type": "string", "enum": ["completed", "compensated", "failed"]},
        "result": {"type": ["object", "null"]},
        "failure": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "properties": {
                    "step": {"type": ["string", "null"]}, "reason": {"type": "string"}}},
            ]
        },
    },
    "required": ["saga_id", "saga_type", "status", "result", "failure"],
}


@dataclass
class _CommandUse:
    """A command as the sagas use it: its contract (None: declared by name only) and where."""

    name: str
    contract: Command[Any, Any] | None = None
    used_by: list[str] = field(default_factory=list)

    @property
    def service(self) -> str:
        return self.name.split(".", 1)[0]


def _commands(definitions: list[SagaDefinition]) -> dict[str, _CommandUse]:
    uses: dict[str, _CommandUse] = {}
    for definition in definitions:
        contracts = definition.contracts
        for spec in definition.steps.values():
            for name, role in ((spec.command, "step"),
                               (spec.compensation_command, "compensation of")):
                if name is None:
                    continue
                use = uses.setdefault(name, _CommandUse(name))
                use.contract = use.contract or contracts.get(name)
                where = f"{definition.saga_type} v{definition.version}: {role} {spec.name}"
                if where not in use.used_by:
                    use.used_by.append(where)
    return dict(sorted(uses.items()))


class _Schemas:
    """Every pydantic model's JSON schema, with `$ref`s into components/schemas (one name per
    model, pydantic disambiguating models that share a class name)."""

    def __init__(self, models: Iterable[type[BaseModel]]) -> None:
        unique = list(dict.fromkeys(models))
        mapping, top = models_json_schema(
            [(m, "validation") for m in unique], ref_template=SCHEMA_REF
        )
        self.refs = {model: schema for (model, _mode), schema in mapping.items()}
        self.components: dict[str, Any] = dict(top.get("$defs", {}))

    def of(self, model: type[BaseModel] | None) -> dict[str, Any]:
        return dict(self.refs[model]) if model is not None else dict(ANY_OBJECT)


def _models(definitions: list[SagaDefinition], uses: dict[str, _CommandUse]) -> list[Any]:
    models: list[Any] = [d.input_model for d in definitions if d.input_model is not None]
    for use in uses.values():
        if use.contract is not None:
            models.extend(m for m in (use.contract.payload, use.contract.reply,
                                      use.contract.refusal) if m is not None)
    return models


def _message(name: str, title: str, summary: str, headers: dict[str, Any],
             payload: dict[str, Any], correlation: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": headers,
        "payload": payload,
        "correlationId": {"location": f"$message.header#/{correlation}"},
    }


def _command_messages(use: _CommandUse, schemas: _Schemas) -> dict[str, dict[str, Any]]:
    contract = use.contract
    note = "" if contract is not None else " No contract is declared: the payload is any object."
    described = f"{contract.description} " if contract is not None and contract.description else ""
    summary = f"{described}Used by {'; '.join(use.used_by)}.{note}"
    reply_payload = schemas.of(contract.reply if contract else None)
    refusal = contract.refusal if contract is not None else None
    refusal_payload = (
        {"allOf": [REASON, schemas.of(refusal)]} if refusal is not None else dict(REASON)
    )
    return {
        use.name: _message(
            use.name, f"Command {use.name}", summary,
            headers_schema(COMMAND, message_type="command", command=use.name),
            schemas.of(contract.payload if contract else None), "message-id",
        ),
        f"{use.name}.reply": _message(
            f"{use.name}.reply", f"Reply to {use.name}: success", summary,
            headers_schema(REPLY, message_type="reply", outcome="success"),
            reply_payload, "causation-id",
        ),
        f"{use.name}.refusal": _message(
            f"{use.name}.refusal", f"Reply to {use.name}: refused", summary,
            headers_schema(REPLY, message_type="reply", outcome="failure"),
            refusal_payload, "causation-id",
        ),
    }


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def asyncapi_document(
    definitions: Iterable[SagaDefinition],
    *,
    topic_prefix: str = "",
    title: str = "Sagaway sagas",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `definitions` (a registry iterates as its definitions),
    with every topic named under `topic_prefix`."""
    definitions = list(definitions)
    topics = TopicNames(topic_prefix)
    uses = _commands(definitions)
    schemas = _Schemas(_models(definitions, uses))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    starts = f"{ORCHESTRATOR}.requests"
    replies = f"{ORCHESTRATOR}.replies"
    channels[starts] = {
        "address": topics.requests(ORCHESTRATOR),
        "title": "Saga starts",
        "description": "orchestrator.start commands, from the gateway or any client. The record "
        "key is the saga id.",
        "messages": {},
    }
    for definition in sorted({d.saga_type: d for d in definitions}.values(),
                             key=lambda d: d.saga_type):
        key = f"start.{definition.saga_type}"
        messages[key] = _message(
            key, f"Start a {definition.saga_type} saga",
            definition.description or f"Starts a {definition.saga_type} saga.",
            headers_schema(START, message_type="command", command=START_COMMAND,
                           saga_type=definition.saga_type),
            schemas.of(definition.input_model), "correlation-id",
        )
        channels[starts]["messages"][key] = _ref("components", "messages", key)
    operations["receive.start"] = {
        "action": "receive",
        "channel": _ref("channels", starts),
        "summary": "The orchestrator starts at most one saga per correlation id.",
        "messages": [_ref("channels", starts, "messages", k) for k in channels[starts]["messages"]],
    }
    channels[replies] = {
        "address": topics.replies(ORCHESTRATOR),
        "title": "Replies to the orchestrator's commands",
        "messages": {},
    }
    for use in uses.values():
        channel = f"{use.service}.requests"
        channels.setdefault(channel, {
            "address": topics.requests(use.service),
            "title": f"Commands to {use.service}",
            "description": f"Read by the participant's consumer group participant.{use.service}.",
            "messages": {},
        })
        for key, message in _command_messages(use, schemas).items():
            messages[key] = message
            target = channel if key == use.name else replies
            channels[target]["messages"][key] = _ref("components", "messages", key)
        operations[f"send.{use.name}"] = {
            "action": "send",
            "channel": _ref("channels", channel),
            "title": f"Send {use.name}",
            "messages": [_ref("channels", channel, "messages", use.name)],
            "reply": {
                "channel": _ref("channels", replies),
                "messages": [
                    _ref("channels", replies, "messages", f"{use.name}.reply"),
                    _ref("channels", replies, "messages", f"{use.name}.refusal"),
                ],
            },
        }
    messages["final-reply"] = _message(
        "final-reply", "A saga's final reply", "Sent when a saga ends, to its start's reply-to.",
        headers_schema(FINAL_REPLY, message_type="reply"), dict(FINAL_REPLY_PAYLOAD),
        "correlation-id",
    )
    channels["final-replies"] = {
        "address": None,
        "title": "Final replies",
        "description": "The start command's reply-to topic; for sagas the gateway started, "
        f"{topics.named('gateway.replies')}.",
        "messages": {"final-reply": _ref("components", "messages", "final-reply")},
    }
    operations["send.final-reply"] = {
        "action": "send",
        "channel": _ref("channels", "final-replies"),
        "messages": [_ref("channels", "final-replies", "messages", "final-reply")],
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "The messages of the registered sagas, seen from the orchestrator: "
            "every record's key is the saga id and its value a JSON object (docs/messages.md).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas.components, "messages": messages},
    }
