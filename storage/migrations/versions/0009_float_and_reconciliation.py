"""provider float episodes and daily reconciliation runs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_EPISODE = "closed_at IS NULL"

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_float_episodes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("threshold_minor", sa.BigInteger(), nullable=False),
        sa.Column("lowest_minor", sa.BigInteger(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_float_episodes")),
    )
    op.create_index("uq_provider_float_episodes_backend_open", "provider_float_episodes",
                    ["backend"], unique=True, sqlite_where=sa.text(OPEN_EPISODE),
                    postgresql_where=sa.text(OPEN_EPISODE))
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("ours", sa.Integer(), nullable=False),
        sa.Column("theirs", sa.Integer(), nullable=False),
        sa.Column("differences", sa.Integer(), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
        sa.UniqueConstraint("backend", "day", name=op.f("uq_reconciliation_runs_backend_day")),
    )
    op.create_table(
        "reconciliation_differences",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("reference", sa.String(length=150), nullable=False),
        sa.Column("charge_id", BIG_ID, nullable=True),
        sa.Column("our_state", sa.String(length=20), nullable=True),
        sa.Column("their_status", sa.String(length=16), nullable=True),
        sa.Column("our_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("their_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["reconciliation_runs.id"], ondelete="CASCADE",
            name=op.f("fk_reconciliation_differences_run_id_reconciliation_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_differences")),
    )
    op.create_index(op.f("ix_reconciliation_differences_run_id"),
                    "reconciliation_differences", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reconciliation_differences_run_id"),
                  table_name="reconciliation_differences")
    op.drop_table("reconciliation_differences")
    op.drop_table("reconciliation_runs")
    op.drop_index("uq_provider_float_episodes_backend_open",
                  table_name="provider_float_episodes")
    op.drop_table("provider_float_episodes")
