"""Sagas for the orchestrator's integration tests (importable by a `sagaway orchestrator`
subprocess through SAGAWAY_SAGAS=tests.orchestrator.sagas). Timeouts are short so that a lost
reply costs a test about a second."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.dsl import Backoff, parallel, saga, step

FAST: dict[str, Any] = {
    "timeout": 1.0,
    # Enough re-sends to outlast an orchestrator restart in the chaos tests (a dead consumer-group
    # member holds its partitions for a session timeout of 2 s before the survivor gets them).
    "retries": 5,
    "backoff": Backoff(initial=0.1, multiplier=2.0, max=1.0, jitter=0.0),
}


def remember(step_name: str) -> Any:
    """A reply handler that records which participant answered the step."""

    def on_reply(data: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        return {**data, step_name: reply.get("handled")}

    return on_reply


three_steps = saga(
    "test-three-steps",
    version=1,
    steps=[
        step("reserve", "alpha.reserve", compensate="alpha.release",
             on_reply=remember("reserve"), **FAST),
        step("charge", "beta.charge", compensate="beta.refund",
             on_reply=remember("charge"), **FAST),
        step("ship", "gamma.ship", on_reply=remember("ship"), pivot=True, **FAST),
    ],
)

parallel_group = saga(
    "test-parallel",
    version=1,
    steps=[
        parallel(
            "prepare",
            step("reserve", "alpha.reserve", compensate="alpha.release", **FAST),
            step("charge", "beta.charge", compensate="beta.refund", **FAST),
        ),
        step("ship", "gamma.ship", pivot=True, **FAST),
    ],
)


class TypedInput(BaseModel):
    amount: int = Field(gt=0)


typed = saga(
    "test-typed",
    version=1,
    input=TypedInput,
    steps=[step("reserve", "alpha.reserve", compensate="alpha.release", **FAST)],
)


# The chaos tests' sagas: the same shapes with a roomier timeout, so that a loaded machine plus
# an orchestrator restart (process start, group rebalance) never exhausts a step's re-sends.
CHAOS: dict[str, Any] = {**FAST, "timeout": 3.0}

chaos_three_steps = saga(
    "chaos-three-steps",
    version=1,
    steps=[
        step("reserve", "alpha.reserve", compensate="alpha.release", **CHAOS),
        step("charge", "beta.charge", compensate="beta.refund", **CHAOS),
        step("ship", "gamma.ship", pivot=True, **CHAOS),
    ],
)

chaos_parallel = saga(
    "chaos-parallel",
    version=1,
    steps=[
        parallel(
            "prepare",
            step("reserve", "alpha.reserve", compensate="alpha.release", **CHAOS),
            step("charge", "beta.charge", compensate="beta.refund", **CHAOS),
        ),
        step("ship", "gamma.ship", pivot=True, **CHAOS),
    ],
)
