"""Command contracts: a command declared once — its name, its payload model and its reply model
(pydantic) — in a module that both the saga and the participant import.

    RESERVE = Command("inventory.reserve", payload=ReserveItems, reply=Reserved)

The saga builds `RESERVE.payload` and reads a `RESERVE.reply`; the participant's handler is
registered for `RESERVE`, receives the typed payload and returns the typed reply. Both sides
validate through the contract, so a mismatch is a `ContractViolation` naming the command and
the fields, never a `KeyError` in a reply handler. A contract is plain data (name + model
classes): the participant SDK, which never imports the orchestrator, reads it structurally
(`name`, `payload`, `reply`, `refusal`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

PayloadT = TypeVar("PayloadT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=BaseModel)

CONTRACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*$")
MAX_ERRORS_SHOWN = 5

Part = Literal["payload", "reply", "refusal"]


class ContractError(ValueError):
    """A contract declaration is invalid; the message names the command and the fix."""

    def __init__(self, command: str, problem: str, fix: str) -> None:
        self.command = command
        self.problem = problem
        self.fix = fix
        super().__init__(f"command {command!r}: {problem}. Fix: {fix}.")


class ContractViolation(ValueError):
    """A payload, reply or refusal does not match its contract's model.

    `errors` are pydantic's (`loc`, `msg`, ...); the message names the command, the part and
    each field, e.g. "inventory.reserve reply does not match Reserved: reservation_id: Field
    required"."""

    def __init__(self, command: str, part: Part, model: type[BaseModel],
                 errors: list[dict[str, Any]]) -> None:
        self.command = command
        self.part = part
        self.model = model
        self.errors = errors
        shown = "; ".join(_describe(e) for e in errors[:MAX_ERRORS_SHOWN])
        hidden = len(errors) - MAX_ERRORS_SHOWN
        more = f" (and {hidden} more)" if hidden > 0 else ""
        super().__init__(f"{command} {part} does not match {model.__name__}: {shown}{more}")

    @property
    def fields(self) -> list[str]:
        """The dotted paths of the fields in error (`items.0.sku`), `<root>` for the object."""
        return [".".join(str(p) for p in e.get("loc", ())) or "<root>" for e in self.errors]


@dataclass(frozen=True, slots=True, eq=False)
class Command(Generic[PayloadT, ReplyT]):
    """One command both sides agree on: `name` is `<service>.<verb>` (the service's topic is
    `<service>.requests`); `payload` and `reply` are pydantic models; `refusal`, when given,
    is the model of a refusal's details (its `reason` text is always there)."""

    name: str
    payload: type[PayloadT]
    reply: type[ReplyT]
    refusal: type[BaseModel] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not CONTRACT_NAME.match(name):
            raise ContractError(
                str(name), "the name is not <service>.<verb>",
                "write it as 'inventory.reserve' (one dot; letters, digits, '-', '_')",
            )
        for part in ("payload", "reply", "refusal"):
            model = getattr(self, part)
            if part == "refusal" and model is None:
                continue
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise ContractError(
                    name, f"{part}={model!r} is not a pydantic model class",
                    f"declare `class My{part.title()}(pydantic.BaseModel): ...` and pass "
                    f"{part}=My{part.title()}",
                )

    @property
    def service(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def verb(self) -> str:
        return self.name.split(".", 1)[1]

    # -- the saga's side: build the payload, read the reply

    def dump_payload(self, value: PayloadT | Mapping[str, Any]) -> dict[str, Any]:
        """The JSON object sent as the command, from a payload model (or a mapping, checked)."""
        return _dump(self.name, "payload", self.payload, value)

    def load_reply(self, value: Mapping[str, Any]) -> ReplyT:
        """The typed reply, from the JSON object a participant answered with."""
        return _load(self.name, "reply", self.reply, value)

    # -- the participant's side: read the payload, build the reply

    def load_payload(self, value: Mapping[str, Any]) -> PayloadT:
        """The typed payload, from the JSON object of the command."""
        return _load(self.name, "payload", self.payload, value)

    def dump_reply(self, value: ReplyT | Mapping[str, Any]) -> dict[str, Any]:
        """The JSON object answered, from a reply model (or a mapping, checked)."""
        return _dump(self.name, "reply", self.reply, value)

    def dump_refusal(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """A refusal's details, checked against `refusal` when the contract declares one."""
        if self.refusal is None:
            return dict(details)
        return _dump(self.name, "refusal", self.refusal, details)

    def schemas(self) -> dict[str, dict[str, Any]]:
        """The JSON schemas of each part (for AsyncAPI, diagrams and the console's forms)."""
        out = {
            "payload": self.payload.model_json_schema(),
            "reply": self.reply.model_json_schema(),
        }
        if self.refusal is not None:
            out["refusal"] = self.refusal.model_json_schema()
        return out

    def __repr__(self) -> str:
        return (
            f"Command({self.name!r}, payload={self.payload.__name__}, "
            f"reply={self.reply.__name__})"
        )


def _load(command: str, part: Part, model: type[ModelT], value: Any) -> ModelT:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ContractViolation(command, part, model, _errors(exc)) from None


def _dump(command: str, part: Part, model: type[BaseModel], value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel) and not isinstance(value, model):
        raise ContractViolation(command, part, model, [{
            "loc": (), "msg": f"got a {type(value).__name__}, not a {model.__name__}",
            "type": "model_type",
        }])
    checked = value if isinstance(value, model) else _load(command, part, model, value)
    return checked.model_dump(mode="json")


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [dict(e) for e in exc.errors(include_url=False, include_input=False)]


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "<root>"
    return f"{where}: {error.get('msg', 'invalid')}"
