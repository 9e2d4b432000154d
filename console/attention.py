"""The overview's "needs attention" band: from figures already read (counts capped by the queries,
the outbox heartbeats) to the entries an operator must act on, most urgent first. Pure, so the
rules are tested without a database; console/queries/attention.py reads the figures.

A band with no entries means all is well: the template then shows nothing but an "all clear"
line, so a filled band stands out at a glance (docs/console.md, "Needs attention")."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from console.queries.overview import OutboxFigures

# Severities, most urgent first: the band sorts by this and colours each entry by it.
BAD = "bad"
WARN = "warn"
_ORDER = {BAD: 0, WARN: 1}


@dataclass(frozen=True, slots=True)
class Capped:
    """How many rows match, counted up to a cap (the query stops there: "1000+"), the oldest
    one's time and one row's id to link to when there is only one."""

    count: int = 0
    more: bool = False
    oldest: datetime | None = None
    sample_id: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.count}+" if self.more else str(self.count)


@dataclass(frozen=True, slots=True)
class LagGrowth:
    """A consumer group whose lag on a topic only went up over the trend's window."""

    topic: str
    group: str
    since_s: float
    was: int
    now: int


class LagTrend:
    """Consumer lag per (topic, group) as the overview saw it on each refresh, for `window_s`
    plus one older sample as the baseline. Kept in the console process (no history table): a
    group is growing when its lag never went down from a baseline at least `window_s` old and
    ends higher, i.e. its consumer is not keeping up (stopped, or slower than the producers)."""

    def __init__(self, window_s: float) -> None:
        self.window = timedelta(seconds=window_s)
        self.samples: dict[tuple[str, str], deque[tuple[datetime, int]]] = {}

    def observe(self, now: datetime, groups: Iterable[tuple[str, str, int]]) -> None:
        """Record (topic, group, lag) figures read at `now`; groups no longer listed are
        forgotten."""
        seen: set[tuple[str, str]] = set()
        for topic, group, lag in groups:
            key = (topic, group)
            seen.add(key)
            points = self.samples.setdefault(key, deque())
            points.append((now, lag))
            # Keep one sample older than the window: the baseline the growth is measured from.
            while len(points) > 1 and points[1][0] <= now - self.window:
                points.popleft()
        for key in set(self.samples) - seen:
            del self.samples[key]

    def growing(self, now: datetime) -> list[LagGrowth]:
        found = []
        for (topic, group), points in sorted(self.samples.items()):
            first_at, first = points[0]
            if first_at > now - self.window or len(points) < 2:
                continue
            lags = [lag for _, lag in points]
            if lags[-1] > first and all(b >= a for a, b in zip(lags, lags[1:], strict=False)):
                since = (now - first_at).total_seconds()
                found.append(LagGrowth(topic, group, since, first, lags[-1]))
        return found


@dataclass(frozen=True, slots=True)
class AttentionFigures:
    """Everything the rules look at. `held_sync` is None when the gateway's database cannot be
    read (the overview says why elsewhere)."""

    failed: Capped
    new_dead_letters: Capped
    overdue_timeouts: Capped
    held_sync: Capped | None
    outboxes: Sequence[OutboxFigures] = ()
    growing_lag: Sequence[LagGrowth] = ()


@dataclass(frozen=True, slots=True)
class Thresholds:
    relay_stale_after_s: float
    sync_wait_s: float


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the band: what is wrong, how bad, and where to look (a console route, its
    path parameters, its query and an optional #fragment of the target page)."""

    kind: str
    severity: str
    text: str
    route: str
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    fragment: str = ""


def relay_stale(figures: OutboxFigures, now: datetime, stale_after_s: float) -> bool:
    """A relay whose last heartbeat is older than the threshold: its lag figure is old news (the
    relay, or its whole process, has stopped), so it must not read as healthy. A relay that never
    wrote a heartbeat is not called stale: there is nothing old to mistake for health."""
    if figures.error is not None or figures.relay_seen_at is None:
        return False
    return (now - figures.relay_seen_at).total_seconds() > stale_after_s


def _plural(n: Capped, one: str, many: str) -> str:
    return f"{n.shown} {one if n.count == 1 and not n.more else many}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _oldest(n: Capped, now: datetime, word: str = "oldest") -> str:
    if n.oldest is None:
        return ""
    return f" ({word} {_ago((now - n.oldest).total_seconds())} ago)"


def attention_entries(
    figures: AttentionFigures, thresholds: Thresholds, now: datetime
) -> list[Entry]:
    """The band's entries, most urgent first; empty when all is well."""
    entries: list[Entry] = []
    for o in figures.outboxes:
        if relay_stale(o, now, thresholds.relay_stale_after_s):
            assert o.relay_seen_at is not None
            silent = _ago((now - o.relay_seen_at).total_seconds())
            entries.append(
                Entry(
                    "stale-relay",
                    BAD,
                    f"{o.service}: relay heartbeat stale, last seen {silent} ago — the service "
                    "or its relay is not running; its relay lag figure is out of date",
                    "overview",
                    fragment="outbox-lag",
                )
            )
    if figures.failed.count:
        entries.append(
            Entry(
                "failed",
                BAD,
                _plural(figures.failed, "failed saga", "failed sagas")
                + " awaiting an operator"
                + _oldest(figures.failed, now, "oldest failed"),
                "saga_list",
                query={"status": "failed"},
            )
        )
    if figures.overdue_timeouts.count:
        one = figures.overdue_timeouts.count == 1 and not figures.overdue_timeouts.more
        sample = figures.overdue_timeouts.sample_id
        entries.append(
            Entry(
                "stuck",
                BAD,
                _plural(figures.overdue_timeouts, "saga", "sagas")
                + " stuck past a step timeout that has not fired"
                + _oldest(figures.overdue_timeouts, now, "due"),
                "saga_detail" if one and sample else "saga_list",
                path={"saga_id": sample} if one and sample else {},
                query={} if one and sample else {"status": "running"},
            )
        )
    if figures.new_dead_letters.count:
        entries.append(
            Entry(
                "dead-letters",
                WARN,
                _plural(figures.new_dead_letters, "new dead letter", "new dead letters")
                + " not yet replayed or discarded"
                + _oldest(figures.new_dead_letters, now),
                "dead_letter_list",
                query={"status": "new"},
            )
        )
    for g in figures.growing_lag:
        entries.append(
            Entry(
                "lag-growing",
                WARN,
                f"{g.topic} / {g.group}: consumer lag grew from {g.was} to {g.now} records "
                f"over {_ago(g.since_s)} — its consumer is not keeping up",
                "overview",
                fragment="consumer-lag",
            )
        )
    held = figures.held_sync
    if held is not None and held.count:
        single = held.sample_id if held.count == 1 and not held.more else None
        entries.append(
            Entry(
                "held-sync",
                WARN,
                _plural(held, "sync request", "sync requests")
                + f" unanswered past their {thresholds.sync_wait_s:g} s wait"
                + _oldest(held, now, "oldest received"),
                "saga_list" if single else "overview",
                query={"q": single} if single else {},
                fragment="" if single else "requests",
            )
        )
    entries.sort(key=lambda e: _ORDER[e.severity])
    return entries
