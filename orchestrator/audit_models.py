"""The operator audit trail (migration 0031_operator_actions), on the shared declarative Base:
every retry, skip, abort or resume an operator asked for, applied or refused, and who asked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.storage.models import Base, BigIdType, JSONType, Timestamp


class OperatorAction(Base):
    """One operator action on one saga."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigIdType, primary_key=True, autoincrement=True)
    saga_id: Mapped[str] = mapped_column(sa.String(36), nullable=False)
    # retry | skip | abort | resume
    action: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    step: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # What the operator supplied: the result of a skipped step, the reason of an abort.
    params: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    # applied | rejected
    outcome: Mapped[str] = mapped_column(sa.String(20), nullable=False)
    # Why it was rejected, or the saga status it left.
    detail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)

    __table_args__ = (
        sa.Index("ix_operator_actions_saga_id_id", "saga_id", "id"),
        sa.Index("ix_operator_actions_created_at", "created_at"),
    )


operator_actions: sa.Table = OperatorAction.__table__  # type: ignore[assignment]
