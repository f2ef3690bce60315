"""Scheduled verification and provider-level monitoring (Issue 13).

- `sampling_policies`: per provider, the share of its reports drawn for audit, a minimum per day, the
  escalated values and the escalation's state; `scheduled_draws`: each report the schedule drew, with
  the inputs that justify the draw, unique per (provider, report).
- `monitor_states`: a provider's monitor per period (`auditor.monitoring.MonitorState` as JSON, and its
  figures as columns); `monitor_calibrations`: per-domain null bounds from honest reference traces.
- `webhook_deliveries` and `webhook_attempts`: notifications to the auditor's staff, every attempt.
- `audits.full_exposure`: the audit reveals its whole exposure plan in the first round.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _one_of(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}_valid"))


LEVELS = ("base", "escalated")


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(
            sa.Column("full_exposure", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.create_table(
        "sampling_policies",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("min_per_day", sa.Integer(), nullable=False),
        sa.Column("escalated_share", sa.Float(), nullable=False),
        sa.Column("escalated_min_per_day", sa.Integer(), nullable=False),
        sa.Column("clean_audits", sa.Integer(), nullable=False),
        sa.Column("warning_e_value", sa.Float(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("escalation_reason", sa.String(length=16), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clean_streak", sa.Integer(), nullable=False),
        sa.Column("drawn_through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _one_of("sampling_policies", "level", LEVELS),
        _one_of("sampling_policies", "escalation_reason", ("fail", "alarm", "evidence")),
        sa.CheckConstraint(
            "share >= 0 AND share <= escalated_share AND escalated_share <= 1",
            name=op.f("ck_sampling_policies_shares_ordered"),
        ),
        sa.CheckConstraint(
            "min_per_day >= 0 AND min_per_day <= escalated_min_per_day", name=op.f("ck_sampling_policies_minimums_ordered")
        ),
        sa.CheckConstraint("clean_audits >= 1 AND warning_e_value > 1", name=op.f("ck_sampling_policies_escalation_bounds")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_sampling_policies_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_sampling_policies")),
    )
    op.create_table(
        "scheduled_draws",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("report_id", sa.Uuid(), nullable=False),
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("key_period", sa.String(length=10), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("score", sa.String(length=64), nullable=False),
        sa.Column("share", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        _one_of("scheduled_draws", "reason", ("share", "minimum")),
        _one_of("scheduled_draws", "level", LEVELS),
        sa.ForeignKeyConstraint(["audit_id"], ["audits.id"], name=op.f("fk_scheduled_draws_audit_id_audits")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_scheduled_draws_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name=op.f("fk_scheduled_draws_report_id_reports")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_draws")),
        sa.UniqueConstraint("provider_id", "report_id", name=op.f("uq_scheduled_draws_provider_id_report_id")),
    )
    op.create_index(op.f("ix_scheduled_draws_audit_id"), "scheduled_draws", ["audit_id"], unique=False)
    op.create_index(
        "ix_scheduled_draws_provider_id_drawn_at", "scheduled_draws", ["provider_id", "drawn_at"], unique=False
    )
    op.create_table(
        "monitor_states",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("calibration", sa.String(length=80), nullable=False),
        sa.Column("state", JSON_DOCUMENT, nullable=False),
        sa.Column("audits", sa.Integer(), nullable=False),
        sa.Column("proof_failures", sa.Integer(), nullable=False),
        sa.Column("log_e", sa.Float(), nullable=False),
        sa.Column("max_log_e", sa.Float(), nullable=False),
        sa.Column("alarm", sa.String(length=16), nullable=True),
        sa.Column("alarm_at", sa.Integer(), nullable=True),
        sa.Column("alarmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inflated_reports_lower", sa.Float(), nullable=False),
        sa.Column("token_share_lower", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _one_of("monitor_states", "alarm", ("proof", "statistical")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_monitor_states_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_states")),
        sa.UniqueConstraint("provider_id", "period", name=op.f("uq_monitor_states_provider_id_period")),
    )
    op.create_index(op.f("ix_monitor_states_provider_id"), "monitor_states", ["provider_id"], unique=False)
    op.create_table(
        "monitor_calibrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("traces", sa.Integer(), nullable=False),
        sa.Column("rates", JSON_DOCUMENT, nullable=False),
        sa.Column("policy", JSON_DOCUMENT, nullable=False),
        sa.Column("heads", sa.String(length=32), nullable=False),
        sa.Column("embd_id", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_calibrations")),
        sa.UniqueConstraint("domain", "version", name=op.f("uq_monitor_calibrations_domain_version")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_key", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("body", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        _one_of("webhook_deliveries", "status", ("pending", "delivered", "failed")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_webhook_deliveries_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_key", "url", name=op.f("uq_webhook_deliveries_event_key_url")),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["webhook_deliveries.id"], name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sa.UniqueConstraint("delivery_id", "number", name=op.f("uq_webhook_attempts_delivery_id_number")),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_status_next_attempt_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("monitor_calibrations")
    op.drop_index(op.f("ix_monitor_states_provider_id"), table_name="monitor_states")
    op.drop_table("monitor_states")
    op.drop_index("ix_scheduled_draws_provider_id_drawn_at", table_name="scheduled_draws")
    op.drop_index(op.f("ix_scheduled_draws_audit_id"), table_name="scheduled_draws")
    op.drop_table("scheduled_draws")
    op.drop_table("sampling_policies")
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("full_exposure")
