"""The saga page's step timeline, built from `saga_steps` rows: one entry per attempt of a forward
step or compensation, pairing the "sent" row with the row of its outcome, placed on a time axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Attempt:
    step: str
    kind: str  # forward | compensation
    attempt: int
    message_id: str | None
    status: str  # sent (awaiting) | succeeded | failed | timed_out | skipped | ignored
    sent_at: datetime | None = None
    replied_at: datetime | None = None
    command: Any = None
    reply: Any = None
    error: str | None = None
    # Replies that arrived for this attempt but were ignored (late, duplicate), with why.
    ignored: list[dict[str, Any]] = field(default_factory=list)
    # Position on the bar chart, in percent of the saga's time span.
    offset_pct: float = 0.0
    width_pct: float = 0.0

    @property
    def in_flight(self) -> bool:
        return self.status == "sent"

    def duration_s(self, now: datetime) -> float | None:
        if self.sent_at is None:
            return None
        end = self.replied_at or now
        return max(0.0, (end - self.sent_at).total_seconds())


@dataclass(slots=True)
class Timeline:
    attempts: list[Attempt]
    start: datetime | None
    end: datetime | None

    @property
    def span_s(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, (self.end - self.start).total_seconds())


def build_timeline(
    rows: Sequence[dict[str, Any]],
    *,
    saga_created_at: datetime,
    now: datetime,
    finished: bool,
    saga_updated_at: datetime | None = None,
    awaiting: set[tuple[str, str]] | None = None,
) -> Timeline:
    """Attempts in the order they began; an outcome row without a "sent" row (a skip, or a
    step whose command was never sent) stands on its own. `awaiting` holds the (step, kind)
    pairs the engine still waits on: any other attempt without an outcome was given up (a retry
    superseded it, or the saga was aborted) and is shown `unanswered`, not in flight."""
    attempts: list[Attempt] = []
    by_key: dict[tuple[str, str, int], Attempt] = {}
    for row in rows:
        key = (row["step_name"], row["kind"], int(row["attempt"]))
        current = by_key.get(key)
        if row["status"] == "sent":
            current = Attempt(
                step=row["step_name"],
                kind=row["kind"],
                attempt=int(row["attempt"]),
                message_id=row.get("command_message_id"),
                status="sent",
                sent_at=row.get("sent_at"),
                command=row.get("command"),
            )
            by_key[key] = current
            attempts.append(current)
            continue
        if row["status"] == "ignored":
            note = {
                "at": row.get("replied_at"),
                "payload": row.get("reply_payload"),
                "why": row.get("error"),
            }
            if current is not None:
                current.ignored.append(note)
            else:
                orphan = Attempt(
                    step=row["step_name"],
                    kind=row["kind"],
                    attempt=int(row["attempt"]),
                    message_id=row.get("command_message_id"),
                    status="ignored",
                    replied_at=row.get("replied_at"),
                    reply=row.get("reply_payload"),
                    error=row.get("error"),
                )
                attempts.append(orphan)
            continue
        if current is None or current.status != "sent":
            current = Attempt(
                step=row["step_name"],
                kind=row["kind"],
                attempt=int(row["attempt"]),
                message_id=row.get("command_message_id"),
                status=row["status"],
            )
            by_key[key] = current
            attempts.append(current)
        current.status = row["status"]
        current.replied_at = row.get("replied_at")
        current.reply = row.get("reply_payload")
        current.error = row.get("error")
    latest: dict[tuple[str, str], Attempt] = {}
    for a in attempts:
        latest[(a.step, a.kind)] = a
    for a in attempts:
        still_waiting = awaiting is not None and (a.step, a.kind) in awaiting
        if a.status == "sent" and (not still_waiting or latest[(a.step, a.kind)] is not a):
            a.status = "unanswered"
            if a.ignored:
                a.replied_at = a.ignored[0]["at"]
    start = saga_created_at
    end = (saga_updated_at or now) if finished else now
    for a in attempts:
        for moment in (a.sent_at, a.replied_at):
            if moment is not None and moment > end:
                end = moment
    timeline = Timeline(attempts, start, end)
    span = timeline.span_s
    for a in attempts:
        begin = a.sent_at or a.replied_at
        if begin is None or span <= 0:
            a.offset_pct, a.width_pct = 0.0, 100.0 if span <= 0 else 0.0
            continue
        finish = a.replied_at or (
            now if a.in_flight else end if a.status == "unanswered" else begin
        )
        a.offset_pct = min(100.0, max(0.0, (begin - start).total_seconds() / span * 100))
        a.width_pct = max(
            0.4, min(100.0 - a.offset_pct, (finish - begin).total_seconds() / span * 100)
        )
    return timeline
