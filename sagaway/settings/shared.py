"""Variables that more than one component reads, declared once: each component that needs one
declares a field of this type, and every such field is fed by the same variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

DataDir = Annotated[
    Path,
    Field(
        description=(
            "Where embedded mode keeps its SQLite files (one per service, plus the broker)."
        ),
    ),
]
DEFAULT_DATA_DIR = Path(".sagaway")

StartupRetryMax = Annotated[
    float,
    Field(
        ge=0.1,
        description="Longest backoff between tries to reach a database or broker that is down.",
    ),
]
DEFAULT_STARTUP_RETRY_MAX_S = 30.0

TopicPrefix = Annotated[str, Field(description="Prefix put before every topic name.")]

Partitions = Annotated[int, Field(ge=1, description="Partitions of each topic Sagaway creates.")]
DEFAULT_PARTITIONS = 8

InboxRetention = Annotated[
    float,
    Field(
        gt=0,
        description=(
            "How long a consumer keeps a handled message id (and its reply) to answer "
            "redeliveries; keep it longer than the broker retains records and sagas re-send."
        ),
    ),
]
DEFAULT_INBOX_RETENTION_S = 7 * 24 * 3600.0
