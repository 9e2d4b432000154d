"""The orchestrator's and the participants' own settings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from sagaway.settings.shared import (
    DEFAULT_INBOX_RETENTION_S,
    DEFAULT_STARTUP_RETRY_MAX_S,
    InboxRetention,
    StartupRetryMax,
)
from sagaway.settings.sources import ComponentSettings, split_list


class OrchestratorSettings(ComponentSettings):
    """The saga orchestrator: which sagas it runs, and its timers."""

    sagas: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description=(
            "Python modules (dotted names) whose saga definitions the orchestrator and gateway "
            "load; comma-separated or a JSON list. Unset → the example `place-order` "
            "(examples.place_order.saga) and its route POST /api/v1/orders."
        ),
    )
    timer_batch_size: int = Field(
        default=200,
        ge=1,
        description=(
            "Orchestrator: most due timers (step timeouts, retry backoffs) fired in one "
            "transaction."
        ),
    )
    timer_poll_interval_ms: int = Field(
        default=2000,
        ge=1,
        description=(
            "Orchestrator: longest pause between looks for due timers. The loop sleeps until "
            "the next timer is due, and a timer this instance commits for earlier wakes it; the "
            "look finds timers written elsewhere (another instance, an operator action)."
        ),
    )
    unknown_version_recheck_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Orchestrator: how long a due timer of a saga whose definition version is not "
            "loaded waits before it is looked at again (the saga is left untouched meanwhile)."
        ),
    )
    inbox_retention_s: InboxRetention = DEFAULT_INBOX_RETENTION_S
    startup_retry_max_s: StartupRetryMax = DEFAULT_STARTUP_RETRY_MAX_S

    @field_validator("sagas", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        return split_list(value)


class ParticipantSettings(ComponentSettings):
    """A participant service: its consumer group's topics and its inbox."""

    inbox_retention_s: InboxRetention = DEFAULT_INBOX_RETENTION_S
