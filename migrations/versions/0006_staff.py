"""The staff dashboard (Issue 14): staff accounts, their server-side sessions, failed sign-ins for the
login rate limit, and the indexes that the staff's lists page through.

Sessions are rows, not signed tokens, so that logout and expiry end them at once; failed sign-ins are
rows so that the limit holds across API processes. The lists page newest first by (timestamp, id).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_accounts")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_accounts_email")),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff_accounts.id"],
            name=op.f("fk_staff_sessions_staff_id_staff_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_sessions_token_hash")),
    )
    op.create_index(op.f("ix_staff_sessions_staff_id"), "staff_sessions", ["staff_id"], unique=False)
    op.create_index(op.f("ix_staff_sessions_expires_at"), "staff_sessions", ["expires_at"], unique=False)
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index(
        "ix_login_failures_account_occurred_at", "login_failures", ["account", "occurred_at"], unique=False
    )
    op.create_index(
        "ix_login_failures_address_occurred_at", "login_failures", ["address", "occurred_at"], unique=False
    )
    op.create_index(op.f("ix_login_failures_occurred_at"), "login_failures", ["occurred_at"], unique=False)
    op.create_index("ix_reports_received_at_id", "reports", ["received_at", "id"], unique=False)
    op.create_index("ix_reports_request_id", "reports", ["request_id"], unique=False)
    op.create_index("ix_audits_created_at_id", "audits", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audits_created_at_id", table_name="audits")
    op.drop_index("ix_reports_request_id", table_name="reports")
    op.drop_index("ix_reports_received_at_id", table_name="reports")
    op.drop_table("login_failures")
    op.drop_table("staff_sessions")
    op.drop_table("staff_accounts")
