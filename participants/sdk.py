"""The participant SDK: a service declares async command handlers; `ParticipantRunner` runs them.

    inventory = Participant("inventory")

    @inventory.handles(RESERVE)      # a command contract, shared with the saga
    async def reserve(ctx: CommandContext, items: ReserveItems) -> Reserved:
        ...                          # business writes on ctx.conn, the command's transaction
        raise Rejection("no stock", sku="sku-9")   # → failure reply, the saga compensates
        return Reserved(reservation_id=...)        # → success reply

A handler returns its reply (success), raises `Rejection` (a business "no": failure reply), or
raises anything else (transient: the command is retried with backoff, then dead-lettered).
Registered for a contract (anything with `name`, `payload`, `reply` and `refusal`, such as the
orchestrator's `Command`), the payload, the reply and the refusal's details are validated
against its models; a reply that does not match is answered as a failure naming the field (its
writes undone), never retried: a bug in the handler would fail the same way every time. A
handler registered by name (`handles("inventory.reserve", payload=Model)`) returns a JSON object.

A participant with settings of its own declares their model, `Participant("shipping",
settings=ShippingSettings)`: the runner builds it once, and handlers read it as `ctx.settings`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, TypeVar, overload

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.messaging.envelope import Message

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
VERB_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MAX_VALIDATION_ERRORS = 20

ModelT = TypeVar("ModelT", bound=BaseModel)
PayloadT = TypeVar("PayloadT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=BaseModel)
PayloadT_co = TypeVar("PayloadT_co", bound=BaseModel, covariant=True)
ReplyT_co = TypeVar("ReplyT_co", bound=BaseModel, covariant=True)
Handler = Callable[["CommandContext", Any], Awaitable[Any]]
TypedHandler = Callable[["CommandContext", PayloadT], Awaitable[ReplyT | Mapping[str, Any]]]


class Contract(Protocol[PayloadT_co, ReplyT_co]):
    """A command contract as the SDK reads it: the orchestrator's `Command` fits it, and the
    SDK never imports the orchestrator (docs/architecture.md, layers)."""

    @property
    def name(self) -> str: ...

    @property
    def payload(self) -> type[PayloadT_co]: ...

    @property
    def reply(self) -> type[ReplyT_co]: ...

    @property
    def refusal(self) -> type[BaseModel] | None: ...


class ParticipantDefinitionError(ValueError):
    """A participant or handler declaration is invalid (bad name, duplicate command, ...)."""


class Rejection(Exception):
    """A business "no": the command is answered with a failure reply and the saga compensates.

    `reason` is the human text; `details` are extra JSON fields of the reply (e.g. `sku=...`).
    Everything the handler wrote before raising is rolled back."""

    def __init__(self, reason: str, **details: Any) -> None:
        if not isinstance(reason, str) or not reason:
            raise TypeError("a Rejection needs a non-empty reason text")
        if "reason" in details:
            raise TypeError("'reason' is the rejection's text, not a detail")
        super().__init__(reason)
        self.reason = reason
        self.details = details

    @classmethod
    def of(cls, reason: str, details: BaseModel) -> Rejection:
        """A refusal whose details are a model (the contract's `refusal`)."""
        return cls(reason, **details.model_dump(mode="json"))

    def to_payload(self) -> dict[str, Any]:
        """The failure reply's value: `{"reason": ..., **details}`."""
        return {"reason": self.reason, **self.details}


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler gets besides its payload: the command, the transaction to write in, and
    the participant's own settings (an instance of the model it declared; None without one)."""

    message: Message
    conn: AsyncConnection
    settings: Any
    participant: str

    @property
    def saga_id(self) -> str | None:
        return self.message.saga_id

    @property
    def command(self) -> str:
        assert self.message.command is not None
        return self.message.command

    @property
    def attempt(self) -> int:
        return self.message.attempt or 1

    def require_saga_id(self) -> str:
        """The saga id, which the examples use as the order id; a command without one (or with
        one too long to be an order id) is rejected."""
        saga_id = self.message.saga_id
        if not saga_id:
            raise Rejection(f"{self.command} needs a saga-id header (the order id)")
        if len(saga_id) > 36:
            raise Rejection(f"saga-id {saga_id[:40]!r}... is longer than 36 characters")
        return saga_id


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered command: its handler, the model its payload is validated against and,
    for a contract, the models of its reply and of a refusal's details."""

    command: str
    handler: Handler
    payload_model: type[BaseModel] | None
    reply_model: type[BaseModel] | None = None
    refusal_model: type[BaseModel] | None = None

    def parse(self, payload: dict[str, Any]) -> Any:
        """The typed payload; an invalid one raises Rejection saying what is wrong."""
        if self.payload_model is None:
            return payload
        try:
            return self.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise _mismatch(f"invalid {self.command} payload", exc, "(payload)") from None

    def reply_body(self, result: Any) -> Any:
        """The reply a handler returned, checked against the contract: a JSON object, or
        (untyped) the result as it is. A mismatch raises `ContractMismatch`."""
        model = self.reply_model
        if model is None:
            return result
        what = f"{self.command} reply does not match {model.__name__}"
        if isinstance(result, BaseModel) and not isinstance(result, model):
            raise ContractMismatch(
                f"{what}: the handler returned a {type(result).__name__}",
                errors=[{"loc": [], "msg": f"not a {model.__name__}"}],
            )
        try:
            checked = result if isinstance(result, model) else model.model_validate(result)
        except ValidationError as exc:
            raise _mismatch(what, exc, "(reply)", ContractMismatch) from None
        return checked.model_dump(mode="json")

    def refusal_body(self, rejection: Rejection) -> dict[str, Any]:
        """A failure reply's value; with a contract's `refusal`, its details are checked, and
        details that do not match are named in the reason (it is still a refusal)."""
        model = self.refusal_model
        if model is None or isinstance(rejection, ContractMismatch):
            return rejection.to_payload()
        try:
            details = model.model_validate(rejection.details).model_dump(mode="json")
        except ValidationError as exc:
            mismatch = _mismatch(
                f"{self.command} refusal does not match {model.__name__}", exc, "(details)"
            )
            return {
                "reason": f"{rejection.reason} ({mismatch.reason})",
                "errors": mismatch.details["errors"],
            }
        return {"reason": rejection.reason, **details}


class ContractMismatch(Rejection):
    """A handler's reply does not match its contract: answered as a failure naming the fields
    (the handler's writes undone), never retried."""


def _mismatch(
    what: str, exc: ValidationError, root: str, kind: type[Rejection] = Rejection
) -> Rejection:
    """A rejection whose reason names each field in error (`items.0.sku: Field required`)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    shown = [
        {"loc": [str(part) for part in error["loc"]], "msg": error["msg"]}
        for error in errors[:MAX_VALIDATION_ERRORS]
    ]
    summary = "; ".join(f"{'.'.join(e['loc']) or root}: {e['msg']}" for e in shown[:3])
    return kind(f"{what}: {summary}", errors=shown)


class Participant:
    """A service that handles commands `<name>.<verb>` sent to its topic `<name>.requests`.

    `settings`: the model of its own settings (a pydantic settings class, which reads its values
    from the environment when built without arguments), or None when it has none."""

    def __init__(
        self, name: str, description: str = "", *, settings: type[BaseModel] | None = None
    ) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ParticipantDefinitionError(
                f"participant name {name!r} is not valid: use letters, digits, '-' or '_' "
                "(it names the topic <name>.requests)"
            )
        if settings is not None and not (
            isinstance(settings, type) and issubclass(settings, BaseModel)
        ):
            raise ParticipantDefinitionError(
                f"participant {name!r}: settings= must be a pydantic model class, got {settings!r}"
            )
        self.name = name
        self.description = description
        self.settings_model = settings
        self._handlers: dict[str, HandlerSpec] = {}

    def __repr__(self) -> str:
        return f"Participant({self.name!r}, commands={self.commands})"

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def settings(self) -> Any:
        """A new instance of the participant's settings model, read from the environment (and
        the TOML file); None when it declares none."""
        if self.settings_model is None:
            return None
        return self.settings_model()

    @overload
    def handles(
        self, command: Contract[PayloadT, ReplyT]
    ) -> Callable[[TypedHandler[PayloadT, ReplyT]], TypedHandler[PayloadT, ReplyT]]: ...

    @overload
    def handles(
        self, command: str, *, payload: type[ModelT] | None = None
    ) -> Callable[[Handler], Handler]: ...

    def handles(self, command: Any, *, payload: Any = None) -> Callable[[Any], Any]:
        """Register the decorated `async def handler(ctx, payload)` for `command`.

        `command` is a contract (its payload model is validated in, its reply model out) or a
        name: with `payload=Model`, the handler gets a validated `Model` instance; without, the
        raw dict.
        """
        reply_model: type[BaseModel] | None = None
        refusal_model: type[BaseModel] | None = None
        if not isinstance(command, str):
            if payload is not None:
                raise ParticipantDefinitionError(
                    f"{command!r}: a contract carries its payload model; leave payload= out"
                )
            command, payload, reply_model, refusal_model = _read_contract(command)
        prefix = f"{self.name}."
        if not isinstance(command, str) or not command.startswith(prefix):
            raise ParticipantDefinitionError(
                f"participant {self.name!r} can only handle commands named {prefix}<verb>, "
                f"not {command!r}"
            )
        if not VERB_PATTERN.match(command[len(prefix) :]):
            raise ParticipantDefinitionError(
                f"{command!r}: the verb must be letters, digits, '-' or '_'"
            )
        if command in self._handlers:
            raise ParticipantDefinitionError(f"{command!r} has a handler already")
        is_model = isinstance(payload, type) and issubclass(payload, BaseModel)
        if payload is not None and not is_model:
            raise ParticipantDefinitionError(
                f"{command!r}: payload= must be a pydantic model class, got {payload!r}"
            )

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise ParticipantDefinitionError(
                    f"the handler of {command!r} must be an `async def` function"
                )
            self._handlers[command] = HandlerSpec(
                command, handler, payload, reply_model, refusal_model
            )
            return handler

        return register

    def handler_for(self, command: str | None) -> HandlerSpec | None:
        return self._handlers.get(command or "")


def _read_contract(
    contract: Any,
) -> tuple[str, type[BaseModel], type[BaseModel], type[BaseModel] | None]:
    """The name and models of a contract, read structurally (see `Contract`)."""
    name = getattr(contract, "name", None)
    payload, reply, refusal = (
        getattr(contract, part, None) for part in ("payload", "reply", "refusal")
    )
    if (
        not isinstance(name, str)
        or not _is_model(payload)
        or not _is_model(reply)
        or not (refusal is None or _is_model(refusal))
    ):
        raise ParticipantDefinitionError(
            f"{contract!r} is neither a command name nor a contract (a `name` and pydantic "
            "models `payload`, `reply` and optionally `refusal`)"
        )
    return name, payload, reply, refusal


def _is_model(value: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(value, type) and issubclass(value, BaseModel)


__all__ = [
    "CommandContext",
    "Contract",
    "ContractMismatch",
    "Handler",
    "HandlerSpec",
    "Participant",
    "ParticipantDefinitionError",
    "Rejection",
    "TypedHandler",
]
