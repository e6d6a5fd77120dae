"""scheduler: balance-sweep leases and warning episodes, rule runs, sweeper status

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_claimed_until", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("check_failures", sa.SmallInteger(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("check_error", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("check_failure_told", sa.Boolean(),
                                      server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("balance_low", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column("balance_episode", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("data_low", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column("data_episode", sa.Integer(), server_default="0",
                                      nullable=False))
    with op.batch_alter_table("recharge_rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("episode", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("in_episode", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column("reminded_for", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("skip_run_at", sa.DateTime(timezone=True),
                                      nullable=True))
    op.create_index("ix_sim_topups_phone_index_status", "sim_topups",
                    ["phone_index", "status"], unique=False)
    op.create_table(
        "scheduler_runs",
        sa.Column("job", sa.String(length=32), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("job", "worker", name=op.f("pk_scheduler_runs")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_runs")
    op.drop_index("ix_sim_topups_phone_index_status", table_name="sim_topups")
    with op.batch_alter_table("recharge_rules", schema=None) as batch_op:
        for column in ("skip_run_at", "reminded_for", "in_episode", "episode",
                       "claimed_until"):
            batch_op.drop_column(column)
    with op.batch_alter_table("lines", schema=None) as batch_op:
        for column in ("data_episode", "data_low", "balance_episode", "balance_low",
                       "check_failure_told", "check_error", "check_failures",
                       "check_claimed_until"):
            batch_op.drop_column(column)
