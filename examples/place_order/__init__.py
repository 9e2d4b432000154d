"""The example services — inventory, payments, shipping — and the `place-order` saga they serve.

Each service is a `Participant` in its own module, with its own database; `example(name)`
returns one by name (what `sagaway participant NAME` and `sagaway dev` run).
"""

from __future__ import annotations

import importlib

from participants.sdk import Participant
from sagaway.settings import RouteConfig

# What a deployment runs when SAGAWAY_SAGAS is unset: this saga, and its route.
SAGA_MODULES = ("examples.place_order.saga",)
ROUTES = (RouteConfig(method="POST", path="/api/v1/orders", saga="place-order"),)

EXAMPLE_MODULES = {
    "inventory": "examples.place_order.inventory",
    "payments": "examples.place_order.payments",
    "shipping": "examples.place_order.shipping",
}
EXAMPLE_NAMES = tuple(EXAMPLE_MODULES)


class UnknownParticipant(LookupError):
    """No example service has this name."""


def example(name: str) -> Participant:
    """The example participant called `name` (inventory, payments or shipping)."""
    module_name = EXAMPLE_MODULES.get(name)
    if module_name is None:
        raise UnknownParticipant(
            f"no example participant {name!r} (known: {', '.join(EXAMPLE_NAMES)})"
        )
    participant = importlib.import_module(module_name).participant
    assert isinstance(participant, Participant)
    return participant


__all__ = ["EXAMPLE_NAMES", "ROUTES", "SAGA_MODULES", "UnknownParticipant", "example"]
