"""Integrity (Issue 15): the rows the audit trail vouches for are checked against it, and the trail's
head is sealed with a key the database does not hold.

- `reports` and `verdicts` become append-only like `audit_events` (triggers refuse UPDATE and DELETE):
  a correction is a new event, never a rewrite.
- `chain_seal`: the head of the chain, MACed with COIN_CHAIN_KEY; `pending_events.mac`: the same key
  over each event waiting to be linked. A chain written before this revision has no seal: its first
  append afterwards records `chain.seal_mismatch` for the unsealed head, and `coin verify-chain` names
  those events as not vouched for by the key (upgrade with the service stopped, so that nothing is
  pending: a pending row without a MAC is recorded the same way).
- `audits.exposure_seed` replaces `audits.exposure_plan`: the plan is re-derived from a secret seed
  instead of being stored (a plan's expansion grew with the claimed token count). An audit in flight
  at the upgrade gets a fresh seed, so its remaining rounds follow a new plan.
- `audits.heartbeat_at`: the lease of the worker verifying an audit.
- `reports.receipt_key_id`: which COIN_SECRET_KEY derived the receipt token (rotation).
- `providers.name_key`: the casefolded NFKC of the name, unique (look-alike names are refused).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 10:00:00
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from service.text import name_key

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
APPEND_ONLY_TABLES = ("reports", "verdicts")


def _append_only_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        statements = [
            """
            CREATE FUNCTION coin_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
            END
            $$
            """
        ]
        statements += [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION coin_append_only()"
            for table in APPEND_ONLY_TABLES
        ]
        return statements
    return [
        f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
        for table in APPEND_ONLY_TABLES
        for operation in ("UPDATE", "DELETE")
    ]


def _backfill_name_keys() -> None:
    providers = sa.table("providers", sa.column("id", sa.Uuid()), sa.column("name"), sa.column("name_key"))
    bind = op.get_bind()
    seen: dict[str, str] = {}
    for provider_id, name in bind.execute(sa.select(providers.c.id, providers.c.name)).all():
        key = name_key(name)
        if key in seen:
            raise RuntimeError(
                f"providers {seen[key]!r} and {name!r} differ only in case or Unicode form; rename one "
                "before this upgrade (names must stay distinguishable)"
            )
        seen[key] = name
        bind.execute(providers.update().where(providers.c.id == provider_id).values(name_key=key))


def _reseed_audits_in_flight() -> None:
    audits = sa.table(
        "audits", sa.column("id", sa.Uuid()), sa.column("exposure_plan"), sa.column("exposure_seed")
    )
    bind = op.get_bind()
    for (audit_id,) in bind.execute(sa.select(audits.c.id).where(audits.c.exposure_plan.is_not(None))):
        bind.execute(
            audits.update().where(audits.c.id == audit_id).values(exposure_seed=secrets.token_hex(32))
        )


def upgrade() -> None:
    as_sql = op.get_context().as_sql
    with op.batch_alter_table("providers") as batch:
        batch.add_column(sa.Column("name_key", sa.String(length=200), nullable=True))
    if not as_sql:
        _backfill_name_keys()
    with op.batch_alter_table("providers") as batch:
        batch.alter_column("name_key", existing_type=sa.String(length=200), nullable=False)
        batch.create_unique_constraint(op.f("uq_providers_name_key"), ["name_key"])

    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("receipt_key_id", sa.String(length=16), nullable=True))

    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("exposure_seed", sa.String(length=64), nullable=True))
    if not as_sql:
        _reseed_audits_in_flight()
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("exposure_plan")

    with op.batch_alter_table("pending_events") as batch:
        batch.add_column(sa.Column("mac", sa.String(length=64), nullable=False, server_default=""))
    with op.batch_alter_table("pending_events") as batch:
        batch.alter_column("mac", existing_type=sa.String(length=64), server_default=None)

    op.create_table(
        "chain_seal",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_chain_seal_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_seal")),
    )
    op.create_index(
        "ix_audit_events_integrity_checked",
        "audit_events",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("kind = 'integrity.checked'"),
        sqlite_where=sa.text("kind = 'integrity.checked'"),
    )
    for statement in _append_only_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    if not op.get_context().as_sql:
        in_flight = op.get_bind().scalar(
            sa.text("SELECT count(*) FROM audits WHERE status IN ('challenged', 'verifying')")
        )
        if in_flight:
            raise RuntimeError(
                f"{in_flight} audits are between rounds; revision 0004 stores their exposure plan, which "
                "this revision does not keep: let them finish before downgrading"
            )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute("DROP FUNCTION coin_append_only()")
    else:
        for table in APPEND_ONLY_TABLES:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{operation}")
    op.drop_index("ix_audit_events_integrity_checked", table_name="audit_events")
    op.drop_table("chain_seal")
    with op.batch_alter_table("pending_events") as batch:
        batch.drop_column("mac")
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("exposure_plan", JSON_DOCUMENT, nullable=True))
        batch.drop_column("exposure_seed")
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("receipt_key_id")
    with op.batch_alter_table("providers") as batch:
        batch.drop_constraint(op.f("uq_providers_name_key"), type_="unique")
        batch.drop_column("name_key")
