"""Why a saga is not moving: read from its engine state, its step attempts, timers and unpublished
outbox rows, in words an operator can act on. Pure: the page passes everything in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from console.timeline import Attempt

# A command unanswered for this long is called stuck (the timeout, if any, may be longer).
STUCK_AFTER_S = 30.0


@dataclass(slots=True)
class Diagnosis:
    stuck: bool = False
    lines: list[str] = field(default_factory=list)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)  # clocks of different processes may disagree by a few ms
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def diagnose(
    saga: dict[str, Any],
    attempts: Sequence[Attempt],
    timer_rows: Sequence[dict[str, Any]],
    outbox_rows: Sequence[dict[str, Any]],
    now: datetime,
) -> Diagnosis:
    result = Diagnosis()
    status = saga["status"]
    if status in ("completed", "compensated"):
        return result
    failure = saga.get("failure") or {}
    if status == "failed":
        result.stuck = True
        result.lines.append(
            f"Failed at step {failure.get('step', '?')}: "
            f"{failure.get('reason', 'no reason given')}."
            " A compensation could not complete; fix the cause, then Resume (it re-sends what"
            " failed with a fresh retry budget)."
        )
        return result
    state = saga.get("state") or {}
    tracks = state.get("steps") or {}
    unpublished = {
        (row.get("headers") or {}).get("message-id"): row
        for row in outbox_rows
        if row.get("published_at") is None
    }
    timers_by_step: dict[str, list[dict[str, Any]]] = {}
    for timer in timer_rows:
        timers_by_step.setdefault(timer["step"], []).append(timer)
    open_attempts = {(a.step, a.kind): a for a in attempts if a.in_flight}
    waiting = False
    for step, pair in tracks.items():
        for kind in ("forward", "compensation"):
            track = (pair or {}).get(kind) or {}
            if track.get("status") == "awaiting":
                waiting = True
                attempt = open_attempts.get((step, kind))
                since = attempt.sent_at if attempt and attempt.sent_at else None
                age = (now - since).total_seconds() if since else None
                what = "compensation of" if kind == "compensation" else "step"
                line = f"Waiting for the reply to {what} {step} (attempt {track.get('attempt')})"
                if age is not None:
                    line += f", sent {_ago(age)} ago"
                    if age >= STUCK_AFTER_S:
                        result.stuck = True
                line += "."
                if track.get("message_id") in unpublished:
                    row = unpublished[track.get("message_id")]
                    line += (
                        " The command is still in the orchestrator's outbox"
                        f" (topic {row['topic']}), not yet published: the orchestrator's relay"
                        " is behind or down."
                    )
                else:
                    line += (
                        " The command was published: the participant has not answered — is it"
                        " running and consuming its requests topic?"
                    )
                due = [t for t in timers_by_step.get(step, []) if t["kind"] == "timeout"]
                if due:
                    when = min(t["due_at"] for t in due)
                    line += f" It times out at {when:%Y-%m-%d %H:%M:%S} UTC."
                else:
                    line += (
                        " No timeout is set: it waits until an answer comes or an operator acts."
                    )
                result.lines.append(line)
            elif track.get("status") == "backoff":
                waiting = True
                due = [t for t in timers_by_step.get(step, []) if t["kind"] == "backoff"]
                when = f" at {min(t['due_at'] for t in due):%H:%M:%S} UTC" if due else ""
                error = f" after: {track.get('error')}" if track.get("error") else ""
                result.lines.append(
                    f"Step {step} ({kind}) will be retried{when}{error}."
                    " Retry now sends it at once."
                )
    if not waiting:
        result.stuck = True
        result.lines.append(
            f"The saga is {status} but no command is in flight and no retry is due"
            f" (current step: {saga.get('current_step') or 'none'})."
        )
    return result
