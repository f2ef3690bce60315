"""Initial schema: providers, API keys, reports, audits, challenges, responses, verdicts, audit_events.

audit_events is append-only: besides its hash chain (api/events.py), triggers refuse UPDATE and DELETE,
so tampering needs a deliberate bypass — which the chain then exposes.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:50:44
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

APPEND_ONLY_POSTGRES = [
    """
    CREATE FUNCTION coin_audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
    END
    $$
    """,
    """
    CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION coin_audit_events_append_only()
    """,
]
APPEND_ONLY_SQLITE = [
    """
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("report_id", sa.Uuid(), nullable=True),
        sa.Column("audit_id", sa.Uuid(), nullable=True),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_events_prev_hash")),
    )
    op.create_index(op.f("ix_audit_events_audit_id"), "audit_events", ["audit_id"], unique=False)
    op.create_index(op.f("ix_audit_events_provider_id"), "audit_events", ["provider_id"], unique=False)
    op.create_index(op.f("ix_audit_events_report_id"), "audit_events", ["report_id"], unique=False)
    op.create_table(
        "providers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=True),
        sa.Column("challenge_deadline_seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_providers_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_api_keys_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_provider_id"), "api_keys", ["provider_id"], unique=False)
    op.create_table(
        "reports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.String(length=256), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("body", JSON_DOCUMENT, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("receipt", JSON_DOCUMENT, nullable=False),
        sa.Column("receipt_token_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_reports_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("provider_id", "request_id", name=op.f("uq_reports_provider_id_request_id")),
    )
    op.create_index(op.f("ix_reports_provider_id"), "reports", ["provider_id"], unique=False)
    op.create_table(
        "audits",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("report_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueue_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'challenged', 'verifying', 'done')", name=op.f("ck_audits_status_valid")
        ),
        sa.CheckConstraint(
            "trigger IN ('admin', 'customer', 'scheduled')", name=op.f("ck_audits_trigger_valid")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_audits_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name=op.f("fk_audits_report_id_reports")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audits")),
    )
    op.create_index(op.f("ix_audits_provider_id"), "audits", ["provider_id"], unique=False)
    op.create_index(op.f("ix_audits_report_id"), "audits", ["report_id"], unique=False)
    op.create_index("ix_audits_status_updated_at", "audits", ["status", "updated_at"], unique=False)
    op.create_table(
        "challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("body", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'answered', 'expired')", name=op.f("ck_challenges_status_valid")
        ),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], name=op.f("fk_challenges_audit_id_audits")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_challenges_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_challenges")),
        sa.UniqueConstraint("audit_id", "round", name=op.f("uq_challenges_audit_id_round")),
    )
    op.create_index(op.f("ix_challenges_provider_id"), "challenges", ["provider_id"], unique=False)
    op.create_index("ix_challenges_status_deadline", "challenges", ["status", "deadline"], unique=False)
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("statement", JSON_DOCUMENT, nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signing_key", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('pass', 'fail', 'inconclusive')", name=op.f("ck_verdicts_outcome_valid")
        ),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], name=op.f("fk_verdicts_audit_id_audits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdicts")),
        sa.UniqueConstraint("audit_id", name=op.f("uq_verdicts_audit_id")),
    )
    op.create_table(
        "responses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("challenge_id", sa.Uuid(), nullable=False),
        sa.Column("body", JSON_DOCUMENT, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["challenge_id"], ["challenges.id"], name=op.f("fk_responses_challenge_id_challenges")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
        sa.UniqueConstraint("challenge_id", name=op.f("uq_responses_challenge_id")),
    )
    statements = APPEND_ONLY_POSTGRES if op.get_bind().dialect.name == "postgresql" else APPEND_ONLY_SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("responses")
    op.drop_table("verdicts")
    op.drop_index("ix_challenges_status_deadline", table_name="challenges")
    op.drop_index(op.f("ix_challenges_provider_id"), table_name="challenges")
    op.drop_table("challenges")
    op.drop_index("ix_audits_status_updated_at", table_name="audits")
    op.drop_index(op.f("ix_audits_report_id"), table_name="audits")
    op.drop_index(op.f("ix_audits_provider_id"), table_name="audits")
    op.drop_table("audits")
    op.drop_index(op.f("ix_reports_provider_id"), table_name="reports")
    op.drop_table("reports")
    op.drop_index(op.f("ix_api_keys_provider_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("providers")
    op.drop_index(op.f("ix_audit_events_report_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_provider_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_audit_id"), table_name="audit_events")
    op.drop_table("audit_events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION coin_audit_events_append_only()")
