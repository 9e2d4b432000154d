"""Skip with the reply model: when the skipped command has a contract, the Skip form asks for the
fields of its reply (from the reply model's JSON schema), the result is checked against the model
before anything is recorded, and after applying the page says what the saga did next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from console.inputs import InputRefused, check_text, parse_result
from orchestrator.dsl import Command, ContractViolation
from orchestrator.engine.effects import Decision
from orchestrator.registry import SagaRegistry, UnknownSagaType, UnknownSagaVersion

FIELD_PREFIX = "reply."
SCALARS = ("string", "integer", "number", "boolean")
_A_TYPE = {"integer": "an integer", "number": "a number"}


@dataclass(frozen=True, slots=True)
class ReplyField:
    """One top-level field of a reply model: scalars get their own input, the rest JSON."""

    name: str
    kind: str  # one of SCALARS, or "json"
    required: bool
    description: str
    type_text: str

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name


def reply_contract(
    registry: SagaRegistry, saga: Mapping[str, Any], step: str
) -> Command[Any, Any] | None:
    """The contract whose reply a skip of `step` stands for: the compensation's while that is
    awaited, else the forward command's (None: a plain command name, or the saga not loaded)."""
    try:
        definition = registry.get(str(saga["saga_type"]), int(saga["definition_version"]))
    except (UnknownSagaType, UnknownSagaVersion, KeyError, TypeError, ValueError):
        return None
    spec = definition.steps.get(step)
    if spec is None:
        return None
    tracks = ((saga.get("state") or {}).get("steps") or {}).get(step) or {}
    if (tracks.get("compensation") or {}).get("status") == "awaiting":
        return spec.compensation_contract
    return spec.contract


def _kind(schema: Mapping[str, Any]) -> tuple[str, str]:
    """The input kind of a property schema, and its type as shown to the operator."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        types = [o.get("type") for o in options if isinstance(o, dict)]
        real = [t for t in types if t != "null"]
        if len(real) == 1 and real[0] in SCALARS and len(types) == len(options):
            return str(real[0]), f"{real[0]} or null"
        return "json", "JSON"
    kind = schema.get("type")
    if kind in SCALARS and "enum" not in schema:
        return str(kind), str(kind)
    if "enum" in schema:
        return "json", "one of " + ", ".join(orjson.dumps(v).decode() for v in schema["enum"])
    return "json", f"JSON {kind}" if isinstance(kind, str) else "JSON"


def reply_fields(contract: Command[Any, Any]) -> list[ReplyField]:
    schema = contract.reply.model_json_schema()
    required = set(schema.get("required", []))
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        kind, type_text = _kind(prop)
        fields.append(ReplyField(
            name, kind, name in required, str(prop.get("description", "")), type_text
        ))
    return fields


def _value(field: ReplyField, text: str, max_bytes: int) -> Any:
    if field.kind == "string":
        return text
    if field.kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if field.kind in ("integer", "number"):
        try:
            return int(text) if field.kind == "integer" else float(text)
        except ValueError:
            raise InputRefused(f"{text!r} is not {_A_TYPE[field.kind]}") from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputRefused(f"not valid JSON: {exc}") from None
    # Through parse_result for its size limit and its \u0000 check.
    return parse_result(orjson.dumps({"v": value}).decode(), max_bytes=max_bytes + 8)["v"]


def result_from_fields(
    fields: list[ReplyField], form: Mapping[str, Any], *, max_chars: int, max_bytes: int
) -> dict[str, Any]:
    """The reply an operator filled in, field by field. A blank field is left out: the model's
    default applies, or it is reported missing (an empty string is rarely what was meant)."""
    result: dict[str, Any] = {}
    for field in fields:
        text = check_text(str(form.get(field.input_name, "")), field=field.name,
                          max_chars=max_chars)
        if text == "":
            continue
        try:
            result[field.name] = _value(field, text.strip() if field.kind != "string" else text,
                                        max_bytes)
        except InputRefused as exc:
            raise InputRefused(f"{field.name}: {exc}") from None
    if len(orjson.dumps(result)) > max_bytes:
        raise InputRefused(f"the result is larger than {max_bytes} bytes")
    return result


def check_reply(contract: Command[Any, Any], result: dict[str, Any]) -> None:
    """Refuse (InputRefused, naming each field) a result the step's reply model rejects: the
    saga would otherwise read it as a broken reply and compensate."""
    try:
        contract.load_reply(result)
    except ContractViolation as exc:
        raise InputRefused(
            f"the result does not match the reply of {contract.name} "
            f"({contract.reply.__name__}): "
            + "; ".join(f"{where}: {e.get('msg', 'invalid')}"
                        for where, e in zip(exc.fields, exc.errors, strict=True))
        ) from None


def what_happened_next(decision: Decision, step: str) -> str:
    """One sentence: what the saga did after `step` was skipped."""
    state = decision.state
    if decision.final is not None:
        return f"Skipped {step}; the saga then ended {decision.final.status}."
    sent = [
        f"{c.command} (compensation of {c.step})" if c.kind == "compensation"
        else f"{c.command} (step {c.step})"
        for c in decision.commands
    ]
    if sent:
        return f"Skipped {step}; the saga then sent {', '.join(sent)} and is {state.status}."
    return f"Skipped {step}; the saga is {state.status}, waiting for its other branches."
