"""conversations: line readings, plans, recharge rules, PTB persistence

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 06:44:11.889621
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ptb_bot_data",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ptb_bot_data")),
    )
    op.create_table(
        "ptb_chat_data",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name=op.f("pk_ptb_chat_data")),
    )
    op.create_table(
        "ptb_conversations",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", "key", name=op.f("pk_ptb_conversations")),
    )
    op.create_table(
        "ptb_user_data",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_ptb_user_data")),
    )
    op.create_table(
        "line_readings",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("line_id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("data_mb", sa.Integer(), nullable=True),
        sa.Column("validity_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["lines.id"],
            name=op.f("fk_line_readings_line_id_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_readings")),
    )
    with op.batch_alter_table("line_readings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_line_readings_line_id_read_at", ["line_id", "read_at"], unique=False
        )

    op.create_table(
        "recharge_rules",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("line_id", BIG_ID, nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("trigger_kind", sa.String(length=16), nullable=False),
        sa.Column("calendar", sa.String(length=8), nullable=True),
        sa.Column("calendar_value", sa.Integer(), nullable=True),
        sa.Column("calendar_anchor", sa.String(length=10), nullable=True),
        sa.Column("threshold_minor", sa.BigInteger(), nullable=True),
        sa.Column("threshold_mb", sa.Integer(), nullable=True),
        sa.Column("days_before", sa.Integer(), nullable=True),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("monthly_cap_minor", sa.BigInteger(), nullable=False),
        sa.Column("approval", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("confirmed_amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("confirmed_cap_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("monthly_cap_minor > 0", name=op.f("ck_recharge_rules_cap_positive")),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["lines.id"],
            name=op.f("fk_recharge_rules_line_id_lines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_recharge_rules_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recharge_rules")),
    )
    with op.batch_alter_table("recharge_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recharge_rules_line_id"), ["line_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_recharge_rules_next_run_at"), ["next_run_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_recharge_rules_owner_id"), ["owner_id"], unique=False)

    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan_product_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("warn_balance_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("warn_data_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("unbound_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_column("unbound_at")
        batch_op.drop_column("warn_data_mb")
        batch_op.drop_column("warn_balance_minor")
        batch_op.drop_column("plan_product_id")

    with op.batch_alter_table("recharge_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recharge_rules_owner_id"))
        batch_op.drop_index(batch_op.f("ix_recharge_rules_next_run_at"))
        batch_op.drop_index(batch_op.f("ix_recharge_rules_line_id"))

    op.drop_table("recharge_rules")
    with op.batch_alter_table("line_readings", schema=None) as batch_op:
        batch_op.drop_index("ix_line_readings_line_id_read_at")

    op.drop_table("line_readings")
    op.drop_table("ptb_user_data")
    op.drop_table("ptb_conversations")
    op.drop_table("ptb_chat_data")
    op.drop_table("ptb_bot_data")
