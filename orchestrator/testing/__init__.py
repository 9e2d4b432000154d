"""A test kit for saga authors: run a definition on the pure engine against scripted
participants in a plain pytest test — no broker, no database, milliseconds per test.

    run = run_saga(place_order, order, {"shipping.schedule": refuse("we do not ship to AQ")})
    assert run.compensations == ["payments.refund", "inventory.release"]

`script` says how a participant answers (`reply`, `refuse`, `time_out`, `reply_twice`,
`reply_late`); `run` plays the saga and keeps the commands sent, the step records and the
final status and result (docs/sagas.md, "Testing a saga").
"""

from __future__ import annotations

from orchestrator.testing.run import SagaRun, run_saga
from orchestrator.testing.script import (
    Behaviour,
    Script,
    refuse,
    reply,
    reply_late,
    reply_twice,
    time_out,
)

__all__ = [
    "Behaviour",
    "SagaRun",
    "Script",
    "refuse",
    "reply",
    "reply_late",
    "reply_twice",
    "run_saga",
    "time_out",
]
