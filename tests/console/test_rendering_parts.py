"""The pure parts of the console: SVG charts, the step timeline, the page cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.charts import bar_chart, line_chart
from console.queries.saga_list import BadFilter, Cursor, SagaFilter
from console.timeline import build_timeline

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_line_chart_escapes_series_names_and_places_points_in_the_window() -> None:
    svg = line_chart(
        {
            "<b>svc</b>": [
                (T0, 0.0),
                (T0 + timedelta(minutes=30), 2.0),
                (T0 + timedelta(hours=1), 1.0),
            ]
        },
        start=T0,
        end=T0 + timedelta(hours=1),
        title="lag",
        unit="s",
    )
    assert "<b>svc</b>" not in svg and "&lt;b&gt;svc&lt;/b&gt;" in svg
    assert "<polyline" in svg
    # x from the left edge of the plot (48) to its right edge (640 - 12); y=2 is the top (12).
    assert "48.0,158.0" in svg and "338.0,12.0" in svg and "628.0,85.0" in svg


def test_line_chart_without_samples_says_so() -> None:
    svg = line_chart({}, start=T0, end=T0 + timedelta(hours=1), title="lag")
    assert "no samples yet" in svg


def test_bar_chart_stacks_series_and_labels_whole_numbers() -> None:
    slots = [T0 + timedelta(minutes=i) for i in range(3)]
    svg = bar_chart(
        {
            "completed": [(s, n) for s, n in zip(slots, (1, 0, 5), strict=True)],
            "compensated": [(s, n) for s, n in zip(slots, (1, 0, 0), strict=True)],
        },
        title="rates",
    )
    assert svg.count("<rect") == 3 + 2  # two bars in slot 0, one in slot 2, two legend keys
    assert "12:02 completed: 5" in svg
    assert ">0.5<" not in svg and ">8<" in svg  # the axis goes 0, 2, 4, 6, 8


def row(step: str, kind: str, status: str, attempt: int, at: datetime, **extra: object) -> dict:
    base = {
        "step_name": step,
        "kind": kind,
        "status": status,
        "attempt": attempt,
        "command_message_id": f"m-{step}-{attempt}",
        "sent_at": None,
        "replied_at": None,
        "command": None,
        "reply_payload": None,
        "error": None,
    }
    if status == "sent":
        base["sent_at"] = at
    else:
        base["replied_at"] = at
    base.update(extra)
    return base


def test_timeline_pairs_each_command_with_its_outcome_and_ends_superseded_ones() -> None:
    rows = [
        row("reserve", "forward", "sent", 1, T0, command={"n": 1}),
        row(
            "reserve", "forward", "succeeded", 1, T0 + timedelta(seconds=1), reply_payload={"ok": 1}
        ),
        row("charge", "forward", "sent", 1, T0 + timedelta(seconds=1)),
        row("charge", "forward", "sent", 2, T0 + timedelta(seconds=5)),
        row("charge", "forward", "ignored", 1, T0 + timedelta(seconds=6), error="late reply"),
    ]
    timeline = build_timeline(
        rows,
        saga_created_at=T0,
        now=T0 + timedelta(seconds=10),
        finished=False,
        awaiting={("charge", "forward")},
    )
    reserve, charge1, charge2 = timeline.attempts
    assert (reserve.status, reserve.command, reserve.reply) == ("succeeded", {"n": 1}, {"ok": 1})
    assert reserve.duration_s(T0) == 1.0
    assert charge1.status == "replaced" and charge1.ignored[0]["why"] == "late reply"
    assert charge1.ended_at == T0 + timedelta(seconds=5) and charge1.duration_s(T0) == 4.0
    assert charge2.in_flight and charge2.offset_pct == pytest.approx(50.0)
    assert charge2.width_pct == pytest.approx(50.0)


def test_page_cursor_round_trips_and_rejects_garbage() -> None:
    cursor = Cursor(T0, "abc|def")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("%%%", "bm90IGEgY3Vyc29y"):
        with pytest.raises(BadFilter):
            Cursor.decode(bad)


def test_filter_from_params_checks_every_field() -> None:
    f = SagaFilter.from_params(
        {"type": " place-order ", "status": "running", "age": "lt1h", "q": ""}
    )
    assert f.params() == {"type": "place-order", "status": "running", "age": "lt1h"}
    with pytest.raises(BadFilter):
        SagaFilter.from_params({"q": "x" * 201})
