"""The application a deployment runs: the saga modules of SAGAWAY_SAGAS (moved paths resolved),
or, when that is unset, the example place-order saga and its HTTP route."""

from __future__ import annotations

from examples.place_order import ROUTES as EXAMPLE_ROUTES
from examples.place_order import SAGA_MODULES as EXAMPLE_SAGA_MODULES
from sagaway.cli.moved_saga_modules import current_saga_modules
from sagaway.settings.composed import Settings


def application(settings: Settings) -> Settings:
    """`settings` with the saga modules to load and the routes to serve settled."""
    orchestrator, gateway = settings.orchestrator, settings.gateway
    if orchestrator.sagas is None:
        modules = list(EXAMPLE_SAGA_MODULES)
        routes = gateway.routes or list(EXAMPLE_ROUTES)
    else:
        modules = current_saga_modules(orchestrator.sagas)
        routes = gateway.routes
    if modules == orchestrator.sagas and routes == gateway.routes:
        return settings
    return settings.model_copy(
        update={
            "orchestrator": orchestrator.model_copy(update={"sagas": modules}),
            "gateway": gateway.model_copy(update={"routes": routes}),
        }
    )


def saga_modules(settings: Settings) -> list[str]:
    """The saga modules `application(settings)` loads."""
    sagas = application(settings).orchestrator.sagas
    assert sagas is not None
    return sagas
