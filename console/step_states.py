"""The saga page's "Step states" table: each step's forward command and compensation in words,
so a compensation that can never run says why ("will not compensate: the saga completed")
instead of showing the engine's `pending`. Pure: the page passes the saga row and, when this
console loads it, the saga's definition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.dsl import SagaDefinition

NEVER = "never"  # the css status of a compensation that will not run


@dataclass(frozen=True, slots=True)
class StepStateRow:
    name: str
    forward: str
    forward_status: str
    compensation: str
    compensation_status: str


def _forward(track: dict[str, Any], terminal: bool) -> tuple[str, str]:
    status = str(track.get("status") or "pending")
    if status == "pending":
        return ("not run", NEVER) if terminal else ("pending", "pending")
    text = "outcome unknown" if status == "unknown" else status.replace("_", " ")
    if track.get("attempt"):
        text += f" (try {track['attempt']})"
    return text, status


def _no_compensation(
    name: str, forward: str, saga: dict[str, Any], definition: SagaDefinition | None
) -> str | None:
    """Why a compensation still `pending` will never run, or None when it still may."""
    state = saga.get("state") or {}
    status = saga["status"]
    if definition is not None and name in definition.steps:
        spec = definition.steps[name]
        pivot = definition.pivot
        if pivot is not None and spec.element == pivot:
            return "will not compensate: the pivot, no return after it"
        if pivot is not None and spec.element > pivot:
            return "will not compensate: after the pivot"
        if not spec.compensatable:
            return "will not compensate: no compensation declared"
    if status == "completed":
        return "will not compensate: the saga completed"
    if state.get("pivot_passed"):
        return "will not compensate: the pivot has succeeded"
    undone = {"pending": "never ran", "failed": "failed", "skipped": "was skipped"}
    if forward in undone and (status != "running" or forward != "pending"):
        return f"will not compensate: the step {undone[forward]}, nothing to undo"
    if status == "compensated":
        return "will not compensate: the saga is compensated"
    return None


def _compensation(
    name: str, pair: dict[str, Any], saga: dict[str, Any], definition: SagaDefinition | None
) -> tuple[str, str]:
    track = pair.get("compensation") or {}
    status = str(track.get("status") or "pending")
    if status != "pending":
        text = status.replace("_", " ")
        if track.get("attempt"):
            text += f" (try {track['attempt']})"
        return text, status
    forward = str((pair.get("forward") or {}).get("status") or "pending")
    why = _no_compensation(name, forward, saga, definition)
    if why is not None:
        return why, NEVER
    if saga["status"] == "running":
        return "not needed yet: runs only if the saga fails", "pending"
    if saga["status"] == "failed":
        return "not run: the saga failed before reaching it", "pending"
    return "queued: after the later steps' compensations", "pending"


def describe_steps(
    saga: dict[str, Any], definition: SagaDefinition | None
) -> list[StepStateRow]:
    """One row per step in the saga's stored state, in the definition's order."""
    steps: dict[str, Any] = (saga.get("state") or {}).get("steps") or {}
    terminal = saga["status"] in ("completed", "compensated", "failed")
    rows = []
    for name, pair in steps.items():
        pair = pair or {}
        forward, forward_status = _forward(pair.get("forward") or {}, terminal)
        compensation, compensation_status = _compensation(name, pair, saga, definition)
        rows.append(
            StepStateRow(name, forward, forward_status, compensation, compensation_status)
        )
    return rows
