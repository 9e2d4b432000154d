"""A bulk action's own audit row (target kind "bulk", target id the confirmation form's id): it is
written before the first target is touched and holds what each target did, so the result page is
a GET that reads it back — a refresh, or the same form sent twice, acts on nothing again."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from console.inputs import has_control_character
from console.queries.rows import row_dict
from orchestrator.models import operator_actions

TARGET_KIND = "bulk"
RUNNING, DONE = "running", "applied"
FORM_ID_CHARS = 32
MAX_ID = 2**63 - 1


def new_form_id() -> str:
    """The id a confirmation form carries, naming the bulk action it will start."""
    return secrets.token_hex(FORM_ID_CHARS // 2)


def valid_form_id(value: str) -> bool:
    return len(value) == FORM_ID_CHARS and not has_control_character(value) and value.isalnum()


async def started(engine: AsyncEngine, form_id: str) -> int | None:
    """The audit id of the bulk action this form already started, if any."""
    t = operator_actions.c
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.select(t.id).where(t.target_kind == TARGET_KIND, t.target_id == form_id)
        )
    return None if found is None else int(found)


async def start(
    engine: AsyncEngine, *, action: str, actor: str, form_id: str, params: dict[str, Any]
) -> int:
    """Record that `actor` started bulk `action` (params: what it acts on); its audit id."""
    async with engine.begin() as conn:
        result = await conn.execute(
            operator_actions.insert().values(
                saga_id=None,
                target_kind=TARGET_KIND,
                target_id=form_id,
                action=f"bulk-{action}",
                step=None,
                params=params,
                actor=actor,
                outcome=RUNNING,
                detail="in progress",
                created_at=datetime.now(UTC),
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


async def finish(
    engine: AsyncEngine, audit_id: int, params: dict[str, Any], results: list[dict[str, Any]]
) -> None:
    """Store what each target did (`results`: id, outcome, status, headline, text)."""
    applied = sum(1 for r in results if r["outcome"] == "applied")
    async with engine.begin() as conn:
        await conn.execute(
            operator_actions.update()
            .where(operator_actions.c.id == audit_id)
            .values(
                params={**params, "results": results},
                outcome=DONE,
                detail=f"applied to {applied}, refused for {len(results) - applied}",
            )
        )


async def load(engine: AsyncEngine, audit_id: int) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(operator_actions).where(
                        operator_actions.c.id == audit_id,
                        operator_actions.c.target_kind == TARGET_KIND,
                    )
                )
            )
            .mappings()
            .first()
        )
    return row_dict(row) if row else None
