"""Copy rules per domain (Issue 12): a calibration also stores the copied_spans thresholds its honest
reference traces set (`auditor.protocol.copies.rule_for_references`).

Calibrations registered before this revision were audited under the shipped rule of the time, which
they get: copied 24 %, repeated 60 %, at least 32 tokens.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SHIPPED_RULE = {"copied": 0.24, "repeated": 0.60, "min_tokens": 32}


def upgrade() -> None:
    with op.batch_alter_table("monitor_calibrations") as batch:
        batch.add_column(sa.Column("copy_rule", JSON_DOCUMENT, nullable=True))
    calibrations = sa.table("monitor_calibrations", sa.column("copy_rule", JSON_DOCUMENT))
    op.execute(calibrations.update().values(copy_rule=SHIPPED_RULE))
    with op.batch_alter_table("monitor_calibrations") as batch:
        batch.alter_column("copy_rule", existing_type=JSON_DOCUMENT, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("monitor_calibrations") as batch:
        batch.drop_column("copy_rule")
