"""The saga page's step timeline, built from `saga_steps` rows and the saga's operator actions:
one entry per attempt of a forward step or compensation, pairing the "sent" row with the row of
its outcome, and one per operator action, placed on a time axis. Pure: the page passes the rows.

An attempt never answered ends where the saga stopped waiting for it — the next attempt an
operator's retry sent, or the abort that gave it up — so its bar and duration stop growing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# A retry's audit row is written in the transaction that sent the new attempt, a moment later.
RETRY_MATCH = timedelta(seconds=5)
# Clocks of the processes that wrote the rows may disagree by a little.
CLOCK_SLACK = timedelta(seconds=1)
# An action's commands are stamped when its transaction starts, its audit row when it commits.
ACTION_WINDOW = timedelta(milliseconds=500)


def clock(moment: datetime | None) -> str:
    """A time of day to the millisecond, as the timeline shows attempts and actions."""
    return moment.strftime("%H:%M:%S.%f")[:-3] if moment else "–"


@dataclass(slots=True)
class OperatorMark:
    """An operator action on the saga (an `operator_actions` row), drawn where it happened."""

    at: datetime
    actor: str
    action: str
    step: str | None
    outcome: str  # applied | rejected
    detail: str | None = None
    offset_pct: float = 0.0

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    @property
    def label(self) -> str:
        what = f"{self.action} {self.step}" if self.step else self.action
        return f"{what} by {self.actor}"

    @property
    def begin(self) -> datetime:
        return self.at


@dataclass(slots=True)
class Attempt:
    step: str
    kind: str  # forward | compensation
    attempt: int
    message_id: str | None
    # sent (awaiting) | succeeded | failed | timed_out | skipped | ignored, and, for a "sent"
    # attempt the saga no longer waits for: replaced (a later attempt took its place) or
    # unanswered (given up: aborted, or the saga ended)
    status: str
    sent_at: datetime | None = None
    replied_at: datetime | None = None
    command: Any = None
    reply: Any = None
    error: str | None = None
    # Replies that arrived for this attempt but were ignored (late, duplicate), with why.
    ignored: list[dict[str, Any]] = field(default_factory=list)
    # Where an unanswered attempt ended: when the saga stopped waiting for it, and why.
    ended_at: datetime | None = None
    replaced_by: int | None = None
    ended_by: OperatorMark | None = None
    sent_by: OperatorMark | None = None  # the operator's retry that sent this attempt
    # Position on the bar chart, in percent of the saga's time span.
    offset_pct: float = 0.0
    width_pct: float = 0.0
    # Seconds from the saga's start to this attempt's start.
    offset_s: float = 0.0

    @property
    def in_flight(self) -> bool:
        return self.status == "sent"

    @property
    def begin(self) -> datetime | None:
        return self.sent_at or self.replied_at

    @property
    def finish(self) -> datetime | None:
        """When the attempt ended (reply, timeout, replacement); None while it is in flight."""
        return self.replied_at or self.ended_at

    @property
    def label(self) -> str:
        """The status as the page words it."""
        if self.in_flight:
            return "awaiting reply"
        if self.status == "replaced":
            if self.ended_by is not None:
                return f"replaced by {self.ended_by.actor}'s retry"
            return f"replaced by try {self.replaced_by}"
        if self.status == "unanswered":
            if self.ended_by is not None:
                return f"no reply: given up at {self.ended_by.actor}'s {self.ended_by.action}"
            return "no reply (given up)"
        return self.status.replace("_", " ")

    @property
    def end_note(self) -> str | None:
        """Where and why an attempt without a reply ended, for its details."""
        if self.ended_at is None:
            return None
        if self.status == "replaced":
            who = (
                f"{self.ended_by.actor}'s retry" if self.ended_by is not None else "a new attempt"
            )
            return (
                f"Ended at {clock(self.ended_at)} UTC, replaced by try {self.replaced_by}"
                f" ({who}); a reply to this try would be ignored."
            )
        if self.ended_by is not None:
            return (
                f"Given up at {clock(self.ended_at)} UTC when {self.ended_by.actor} applied"
                f" {self.ended_by.action}."
            )
        return f"Given up at {clock(self.ended_at)} UTC: the saga stopped waiting for it."

    def duration_s(self, now: datetime) -> float | None:
        if self.sent_at is None:
            return None
        end = self.finish or now
        return max(0.0, (end - self.sent_at).total_seconds())


@dataclass(slots=True)
class Timeline:
    attempts: list[Attempt]
    start: datetime | None
    end: datetime | None
    marks: list[OperatorMark] = field(default_factory=list)
    # Attempts and operator actions, in the order they happened.
    entries: list[Attempt | OperatorMark] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, (self.end - self.start).total_seconds())


def marks_of(audit: Sequence[dict[str, Any]]) -> list[OperatorMark]:
    """The saga's `operator_actions` rows as timeline marks, oldest first."""
    marks = [
        OperatorMark(
            at=row["created_at"],
            actor=str(row.get("actor") or "?"),
            action=str(row.get("action") or "?"),
            step=row.get("step"),
            outcome=str(row.get("outcome") or "applied"),
            detail=row.get("detail"),
        )
        for row in audit
        if row.get("created_at") is not None
    ]
    return sorted(marks, key=lambda m: m.at)


def _pair_rows(rows: Sequence[dict[str, Any]]) -> list[Attempt]:
    """Each "sent" row with its outcome row; an outcome without a "sent" row (a skip, a step
    whose command was never sent) or an ignored reply without its attempt stands alone."""
    attempts: list[Attempt] = []
    by_key: dict[tuple[str, str, int], Attempt] = {}
    for row in rows:
        key = (row["step_name"], row["kind"], int(row["attempt"]))
        current = by_key.get(key)
        new = {
            "step": row["step_name"],
            "kind": row["kind"],
            "attempt": int(row["attempt"]),
            "message_id": row.get("command_message_id"),
        }
        if row["status"] == "sent":
            current = Attempt(
                **new, status="sent", sent_at=row.get("sent_at"), command=row.get("command")
            )
            by_key[key] = current
            attempts.append(current)
            continue
        if row["status"] == "ignored":
            note = {"at": row.get("replied_at"), "payload": row.get("reply_payload"),
                    "why": row.get("error")}
            if current is not None:
                current.ignored.append(note)
            else:
                attempts.append(Attempt(
                    **new, status="ignored", replied_at=row.get("replied_at"),
                    reply=row.get("reply_payload"), error=row.get("error"),
                ))
            continue
        if current is None or current.status != "sent":
            current = Attempt(**new, status=row["status"])
            by_key[key] = current
            attempts.append(current)
        current.status = row["status"]
        current.replied_at = row.get("replied_at")
        current.reply = row.get("reply_payload")
        current.error = row.get("error")
    return attempts


def _link_retries(attempts: Sequence[Attempt], marks: Sequence[OperatorMark]) -> None:
    """Each applied retry to the attempt its transaction sent: a later try of its step, stamped
    just before the retry's audit row."""
    for mark in marks:
        if not (mark.applied and mark.action == "retry"):
            continue
        candidates = [
            a for a in attempts
            if a.step == mark.step and a.attempt > 1 and a.sent_at is not None
            and a.sent_by is None and a.sent_at - CLOCK_SLACK <= mark.at <= a.sent_at + RETRY_MATCH
        ]
        best = min(
            candidates,
            key=lambda a: abs((mark.at - a.sent_at).total_seconds()) if a.sent_at else 0.0,
            default=None,
        )
        if best is not None:
            best.sent_by = mark


def _end_unanswered(
    attempts: list[Attempt],
    marks: Sequence[OperatorMark],
    awaiting: set[tuple[str, str]] | None,
    saga_end: datetime | None,
) -> None:
    """Close every "sent" attempt the saga no longer waits for, where it stopped waiting."""
    latest: dict[tuple[str, str], Attempt] = {}
    successor: dict[int, Attempt] = {}
    for a in attempts:
        if a.sent_at is None:
            continue
        previous = latest.get((a.step, a.kind))
        if previous is not None:
            successor[id(previous)] = a
        latest[(a.step, a.kind)] = a
    for a in attempts:
        still_waiting = awaiting is not None and (a.step, a.kind) in awaiting
        if a.status != "sent" or (still_waiting and latest[(a.step, a.kind)] is a):
            continue
        after = successor.get(id(a))
        if after is not None:
            a.status = "replaced"
            a.replaced_by = after.attempt
            a.ended_at = after.sent_at
            a.ended_by = after.sent_by
            continue
        a.status = "unanswered"
        begin = a.sent_at or a.replied_at
        aborts = [
            m for m in marks
            if m.applied and m.action == "abort" and (begin is None or m.at >= begin)
        ]
        if aborts:
            a.ended_by = aborts[0]
            a.ended_at = aborts[0].at
        elif saga_end is not None:
            a.ended_at = saga_end


def build_timeline(
    rows: Sequence[dict[str, Any]],
    *,
    saga_created_at: datetime,
    now: datetime,
    finished: bool,
    saga_updated_at: datetime | None = None,
    awaiting: set[tuple[str, str]] | None = None,
    audit: Sequence[dict[str, Any]] = (),
) -> Timeline:
    """Attempts and operator actions in the order they began. `awaiting` holds the (step, kind)
    pairs the engine still waits on: any other attempt without an outcome ended when a retry
    replaced it (`replaced`) or when the saga gave it up (`unanswered`)."""
    attempts = _pair_rows(rows)
    marks = marks_of(audit)
    saga_end = (saga_updated_at or now) if finished else None
    _link_retries(attempts, marks)
    _end_unanswered(attempts, marks, awaiting, saga_end)
    start = saga_created_at
    end = saga_end or now
    for moment in [m.at for m in marks] + [
        t for a in attempts for t in (a.sent_at, a.replied_at) if t is not None
    ]:
        end = max(end, moment)
    entries: list[Attempt | OperatorMark] = [*attempts, *marks]
    entries.sort(key=lambda e: _order(e, attempts, start))
    timeline = Timeline(attempts, start, end, marks, entries)
    span = timeline.span_s
    for mark in marks:
        mark.offset_pct = _pct(mark.at - start, span)
    for a in attempts:
        begin = a.begin
        if begin is None or span <= 0:
            a.offset_pct, a.width_pct = 0.0, 100.0 if span <= 0 else 0.0
            continue
        a.offset_s = max(0.0, (begin - start).total_seconds())
        finish = a.finish or (now if a.in_flight or a.status == "unanswered" else begin)
        a.offset_pct = _pct(begin - start, span)
        a.width_pct = max(0.4, min(100.0 - a.offset_pct, _pct(finish - begin, span)))
    return timeline


def _order(
    entry: Attempt | OperatorMark, attempts: Sequence[Attempt], start: datetime
) -> tuple[datetime, int]:
    """Where an entry stands in the list: an action before the commands its transaction sent
    (they carry the moment it began; its audit row, the moment it committed)."""
    if isinstance(entry, Attempt):
        return (entry.begin or start, 1)
    moment = entry.at
    for a in attempts:
        begin = a.begin
        if begin is None:
            continue
        if a.sent_by is entry or (
            entry.applied and entry.action != "retry"
            and entry.at - ACTION_WINDOW <= begin <= entry.at
        ):
            moment = min(moment, begin)
    return (moment, 0)


def _pct(delta: timedelta, span: float) -> float:
    if span <= 0:
        return 0.0
    return min(100.0, max(0.0, delta.total_seconds() / span * 100))
