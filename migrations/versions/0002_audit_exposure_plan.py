"""Audits keep their progressive-exposure plan (DESIGN §3 check 8): the blocks and token runs of every
round, drawn once with a CSPRNG when the audit starts, so later rounds reveal the plan's next blocks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("exposure_plan", JSON_DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("exposure_plan")
