"""A step declared with `Command` contracts or over a typed state, turned into the JSON-object
functions the engine calls: payload builders whose output is checked against the contract's
payload model, reply handlers that get the contract's reply model, and (`StateModel`) the
saga's functions given its state model instead of the stored dict. A mismatch raises
`ContractViolation`, which the engine treats like any error in the saga's code (docs/sagas.md,
"The saga's own code failing"): before sending, the step fails; on a reply, its outcome is
unknown and it is compensated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from orchestrator.dsl.contracts import Command
from orchestrator.dsl.declare import Data, PayloadBuilder, ReplyHandler


def forward_payload(
    contract: Command[Any, Any] | None, builder: Callable[[Data], Any] | None
) -> PayloadBuilder | None:
    """The forward payload builder: the author's, checked against the contract if any."""
    if contract is None:
        return builder

    def build(data: Data) -> Data:
        return contract.dump_payload(builder(data) if builder is not None else data)

    return build


def compensation_payload(
    contract: Command[Any, Any] | None,
    builder: Callable[[Data], Any] | None,
    forward: PayloadBuilder | None,
) -> PayloadBuilder | None:
    """The compensation's payload builder: its own, else the forward one (as today), checked
    against the compensation's contract if any (a forward payload model is read as fields)."""
    if contract is None:
        return builder if builder is not None else forward

    def build(data: Data) -> Data:
        if builder is not None:
            value = builder(data)
        else:
            value = forward(data) if forward is not None else data
        if isinstance(value, BaseModel) and not isinstance(value, contract.payload):
            value = value.model_dump(mode="json")
        return contract.dump_payload(value)

    return build


def reply_handler(
    contract: Command[Any, Any] | None, handler: Callable[[Data, Any], Data] | None
) -> ReplyHandler | None:
    """The reply handler: with a contract, the reply is checked (even without a handler) and
    the handler gets the reply model."""
    if contract is None:
        return handler

    def on_reply(data: Data, reply: Data) -> Data:
        typed = contract.load_reply(reply)
        return handler(data, typed) if handler is not None else data

    return on_reply


class StateModel:
    """A saga's typed state (`saga(state=Model)`), kept as the JSON object the engine stores:
    each of the saga's functions gets the model, built from the stored data, and what it
    returns is stored back with the same keys. Data stored by an untyped version of the saga
    (or before a field existed) reads the same way, so sagas in flight carry on."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def load(self, data: Data) -> BaseModel:
        return self.model.model_validate(data)

    def dump(self, value: Any, before: Data) -> Data:
        """The data to store for the state `value`: the fields set on it (a field never set
        keeps out of the JSON, as it was), plus keys of `before` the model does not know."""
        if isinstance(value, Mapping) and not isinstance(value, BaseModel):
            value = self.model.model_validate(value)
        if not isinstance(value, self.model):
            raise TypeError(
                f"a {type(value).__name__} was returned where the state {self.model.__name__} "
                "was expected"
            )
        kept = {k: v for k, v in before.items() if k not in self.model.model_fields}
        return {**kept, **value.model_dump(mode="json", exclude_unset=True)}

    def builder(self, function: Callable[[Any], Any] | None) -> Callable[[Data], Any] | None:
        """`function(state)` as a function of the stored data (payloads, predicates)."""
        if function is None:
            return None

        def from_data(data: Data) -> Any:
            return function(self.load(data))

        return from_data

    def payload(self, function: Callable[[Any], Any] | None) -> Callable[[Data], Any] | None:
        """A payload builder of the state; a model it returns (with no contract to check it
        against) is sent as its JSON object."""
        if function is None:
            return None

        def build(data: Data) -> Any:
            value = function(self.load(data))
            return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

        return build

    def handler(
        self, function: Callable[[Any, Any], Any] | None
    ) -> Callable[[Data, Any], Data] | None:
        """`function(state, reply) -> state` as a function of the stored data."""
        if function is None:
            return None

        def on_reply(data: Data, reply: Any) -> Data:
            return self.dump(function(self.load(data), reply), data)

        return on_reply

    def result(self, function: Callable[[Any], Any] | None) -> Callable[[Data], Data]:
        """The saga's result from the stored data: `function(state)` as a JSON object (a model
        is dumped), or the state itself without a function."""

        def build(data: Data) -> Data:
            value = function(self.load(data)) if function is not None else self.load(data)
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json")
            if not isinstance(value, Mapping):
                raise TypeError(f"result returned {type(value).__name__}, not a model or dict")
            return dict(value)

        return build
