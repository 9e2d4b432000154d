"""The envelope headers of each kind of message (docs/messages.md), as the JSON schemas of an
AsyncAPI message's `headers`. Header values are text on the wire, so every schema is a string."""

from __future__ import annotations

from typing import Any

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

HEADERS: dict[str, dict[str, Any]] = {
    "message-id": {
        "description": "Unique per message (a UUID); receivers deduplicate on it. A re-sent "
        "command keeps its message id and has a higher attempt.",
        "pattern": UUID_PATTERN,
    },
    "message-type": {"description": "command, reply or event",
                     "enum": ["command", "reply", "event"]},
    "command": {"description": "The command name, <service>.<verb>"},
    "correlation-id": {"description": "The originating request's id (the gateway's request id)"},
    "causation-id": {"description": "The message-id of the message this one answers"},
    "saga-id": {"description": "The saga the message belongs to; also the record key"},
    "saga-type": {"description": "The saga's type, e.g. place-order"},
    "saga-step": {"description": "The step (or compensated step) the command belongs to"},
    "attempt": {"description": "1, 2, ... on re-sends of the same command",
                "pattern": "^[1-9][0-9]*$"},
    "reply-to": {"description": "Where the answer goes: a topic, or an http(s):// URL"},
    "reply-mode": {"description": "As the client asked", "enum": ["sync", "async"]},
    "outcome": {"description": "On replies: success, or failure (a business rejection)",
                "enum": ["success", "failure"]},
    "principal": {"description": "Who asked (API key name or token subject), carried onto "
                  "every command"},
    "traceparent": {"description": "W3C trace context, carried end to end"},
    "sent-at": {"description": "RFC 3339 timestamp", "format": "date-time"},
}

# Which headers each kind of message carries (docs/messages.md), and which it always carries.
START = ("message-id", "message-type", "command", "saga-type", "saga-id", "correlation-id",
         "reply-to", "reply-mode", "principal", "traceparent", "sent-at")
COMMAND = ("message-id", "message-type", "command", "saga-id", "saga-type", "saga-step",
           "attempt", "correlation-id", "principal", "traceparent", "reply-to", "sent-at")
REPLY = ("message-id", "message-type", "outcome", "causation-id", "attempt", "saga-id",
         "saga-type", "saga-step", "correlation-id", "traceparent", "sent-at")
FINAL_REPLY = ("message-id", "message-type", "outcome", "causation-id", "correlation-id",
               "saga-id", "saga-type", "reply-mode", "traceparent", "sent-at")
ALWAYS = ("message-id", "message-type", "sent-at")


def headers_schema(names: tuple[str, ...], **fixed: str) -> dict[str, Any]:
    """An object schema of these headers; `fixed` pins some to one value (`command=...`, with
    `_` for `-` in the name)."""
    pinned = {name.replace("_", "-"): value for name, value in fixed.items()}
    properties: dict[str, Any] = {}
    for name in names:
        schema: dict[str, Any] = {"type": "string", **HEADERS[name]}
        if name in pinned:
            schema.pop("enum", None)
            schema["const"] = pinned[name]
        properties[name] = schema
    required = [n for n in names if n in ALWAYS or n in pinned]
    return {"type": "object", "properties": properties, "required": required}
