"""The participant SDK: a service declares async command handlers; `ParticipantRunner` runs them.

    inventory = Participant("inventory")

    @inventory.handles("inventory.reserve", payload=ReserveItems)
    async def reserve(ctx: CommandContext, items: ReserveItems) -> dict[str, Any]:
        ...                          # business writes on ctx.conn, the command's transaction
        raise Rejection("no stock", sku="sku-9")   # → failure reply, the saga compensates
        return {"reservation_id": ...}             # → success reply

A handler returns a JSON object (success), raises `Rejection` (a business "no": failure reply),
or raises anything else (transient: the command is retried with backoff, then dead-lettered).

A participant with settings of its own declares their model, `Participant("shipping",
settings=ShippingSettings)`: the runner builds it once, and handlers read it as `ctx.settings`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.messaging.envelope import Message

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
VERB_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MAX_VALIDATION_ERRORS = 20

ModelT = TypeVar("ModelT", bound=BaseModel)
Handler = Callable[["CommandContext", Any], Awaitable[Any]]


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
    """One registered command: its handler and the model its payload is validated against."""

    command: str
    handler: Handler
    payload_model: type[BaseModel] | None

    def parse(self, payload: dict[str, Any]) -> Any:
        """The typed payload; an invalid one raises Rejection saying what is wrong."""
        if self.payload_model is None:
            return payload
        try:
            return self.payload_model.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            shown = [
                {"loc": [str(part) for part in error["loc"]], "msg": error["msg"]}
                for error in errors[:MAX_VALIDATION_ERRORS]
            ]
            summary = "; ".join(
                f"{'.'.join(e['loc']) or '(payload)'}: {e['msg']}" for e in shown[:3]
            )
            raise Rejection(
                f"invalid {self.command} payload: {summary}", errors=shown
            ) from None


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

    def handles(
        self, command: str, *, payload: type[ModelT] | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the decorated `async def handler(ctx, payload)` for `command`.

        With `payload=Model`, the handler gets a validated `Model` instance; without, the raw dict.
        """
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
            self._handlers[command] = HandlerSpec(command, handler, payload)
            return handler

        return register

    def handler_for(self, command: str | None) -> HandlerSpec | None:
        return self._handlers.get(command or "")


__all__ = [
    "CommandContext",
    "Handler",
    "HandlerSpec",
    "Participant",
    "ParticipantDefinitionError",
    "Rejection",
]
