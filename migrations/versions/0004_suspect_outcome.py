"""Verdicts may say `suspect`: statistical evidence (raises monitoring, accuses nobody), apart from
`fail`, which is reserved for proof (coin-verdict/2, docs/protocol.md "Verdicts").

Only the CHECK constraint on verdicts.outcome changes; the outcome stays a VARCHAR(16). On SQLite the
batch operation rebuilds the table (SQLite cannot alter a constraint in place); on PostgreSQL it is
two ALTER TABLE statements. A downgrade is refused while a `suspect` verdict exists: it is signed and
cannot be rewritten as another outcome.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_verdicts_outcome_valid"
OUTCOMES_BEFORE = "outcome IN ('pass', 'fail', 'inconclusive')"
OUTCOMES_AFTER = "outcome IN ('pass', 'suspect', 'fail', 'inconclusive')"


def _replace_check(condition: str) -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch.create_check_constraint(op.f(CONSTRAINT), condition)


def upgrade() -> None:
    _replace_check(OUTCOMES_AFTER)


def downgrade() -> None:
    if not op.get_context().as_sql:
        suspect = op.get_bind().scalar(sa.text("SELECT count(*) FROM verdicts WHERE outcome = 'suspect'"))
        if suspect:
            raise RuntimeError(
                f"{suspect} verdicts say 'suspect', which revision 0003 cannot hold; "
                "a signed verdict is not rewritten, so this downgrade is refused"
            )
    _replace_check(OUTCOMES_BEFORE)
