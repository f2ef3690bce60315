"""Verification errors per audit: a verification that raises is counted on its audit, and the audit is
closed as `inconclusive` once the count reaches `service.audits.workflow.MAX_VERIFICATION_ERRORS`
(before, the sweeper re-queued such an audit for ever).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(
            sa.Column("verification_errors", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("verification_errors")
