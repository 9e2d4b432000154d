"""Two versions of one saga type, for the versioning tests: v1 ships, v2 does not."""

from __future__ import annotations

from orchestrator.dsl import saga, step
from tests.orchestrator.sagas import FAST

versioned_v1 = saga(
    "test-versioned",
    version=1,
    steps=[
        step("reserve", "alpha.reserve", compensate="alpha.release", **FAST),
        step("ship", "gamma.ship", pivot=True, **FAST),
    ],
)

versioned_v2 = saga(
    "test-versioned",
    version=2,
    steps=[step("reserve", "alpha.reserve", compensate="alpha.release", **FAST)],
)
