"""Verification errors per audit, and the generator of its exposure plan.

- `audits.verification_errors`: a verification that raises is counted on its audit, and the audit is
  closed as `inconclusive` once the count reaches `service.audits.workflow.MAX_VERIFICATION_ERRORS`
  (before, the sweeper re-queued such an audit for ever).
- `audits.plan_generator`: plans are now drawn with BLAKE3 keyed with the audit's seed (a CSPRNG, as
  DESIGN §3 asks) rather than Python's Mersenne Twister; audits started before keep `mt19937`, so that
  an audit running across the upgrade asks for the rest of the plan its first round began.

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


# Written as DDL both back ends read: a CHECK in the column's definition, added and dropped with the
# column. (A batch operation would rebuild `audits` on SQLite, which its foreign keys refuse while
# challenges and verdicts point at it.)
PLAN_GENERATOR = (
    "plan_generator VARCHAR(16) DEFAULT 'mt19937' NOT NULL "
    "CONSTRAINT ck_audits_plan_generator_valid CHECK (plan_generator IN ('mt19937', 'blake3'))"
)


def upgrade() -> None:
    op.add_column(
        "audits", sa.Column("verification_errors", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.execute(f"ALTER TABLE audits ADD COLUMN {PLAN_GENERATOR}")


def downgrade() -> None:
    op.execute("ALTER TABLE audits DROP COLUMN plan_generator")
    op.execute("ALTER TABLE audits DROP COLUMN verification_errors")
