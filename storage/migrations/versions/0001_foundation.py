"""foundation: users, lines, OTP challenges, audit log, simulated carrier

Revision ID: 0001
Revises:
Create Date: 2026-11-25 06:31:17.501177
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)

    op.create_table(
        "sim_lines",
        sa.Column("phone_index", sa.String(length=64), nullable=False),
        sa.Column("phone_enc", sa.Text(), nullable=False),
        sa.Column("operator", sa.String(length=16), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("data_mb", sa.Integer(), nullable=False),
        sa.Column("validity_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_topup_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spend_carry", sa.Integer(), server_default="0", nullable=False),
        sa.Column("data_carry", sa.Integer(), server_default="0", nullable=False),
        sa.Column("daily_spend_minor", sa.Integer(), nullable=False),
        sa.Column("daily_data_mb", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance_minor >= 0", name=op.f("ck_sim_lines_balance_not_negative")),
        sa.CheckConstraint("data_mb >= 0", name=op.f("ck_sim_lines_data_not_negative")),
        sa.PrimaryKeyConstraint("phone_index", name=op.f("pk_sim_lines")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("quiet_start_minute", sa.SmallInteger(), nullable=True),
        sa.Column("quiet_end_minute", sa.SmallInteger(), nullable=True),
        sa.Column("reachable", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quiet_end_minute BETWEEN 0 AND 1439", name=op.f("ck_users_quiet_end")),
        sa.CheckConstraint(
            "quiet_start_minute BETWEEN 0 AND 1439", name=op.f("ck_users_quiet_start")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "lines",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("operator", sa.String(length=16), nullable=False),
        sa.Column("phone_enc", sa.Text(), nullable=False),
        sa.Column("phone_index", sa.String(length=64), nullable=False),
        sa.Column("iccid_enc", sa.Text(), nullable=True),
        sa.Column("iccid_index", sa.String(length=64), nullable=True),
        sa.Column("nickname", sa.String(length=64), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_lines_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lines")),
        sa.UniqueConstraint("iccid_index", name=op.f("uq_lines_iccid_index")),
        sa.UniqueConstraint("phone_index", name=op.f("uq_lines_phone_index")),
    )
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lines_next_check_at"), ["next_check_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_lines_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "otp_challenges",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("phone_index", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_otp_challenges_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otp_challenges")),
    )
    with op.batch_alter_table("otp_challenges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_otp_challenges_phone_index_created_at", ["phone_index", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_otp_challenges_user_id_created_at", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "sim_topups",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("provider_tx_id", sa.String(length=64), nullable=False),
        sa.Column("phone_index", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("duplicate", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settle_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=True),
        sa.Column("data_after_mb", sa.Integer(), nullable=True),
        sa.Column("validity_end_after", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["phone_index"],
            ["sim_lines.phone_index"],
            name=op.f("fk_sim_topups_phone_index_sim_lines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_topups")),
        sa.UniqueConstraint("provider_tx_id", name=op.f("uq_sim_topups_provider_tx_id")),
    )
    with op.batch_alter_table("sim_topups", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sim_topups_reference_first",
            ["reference"],
            unique=True,
            sqlite_where=sa.text("NOT duplicate"),
            postgresql_where=sa.text("NOT duplicate"),
        )


def downgrade() -> None:
    with op.batch_alter_table("sim_topups", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sim_topups_reference_first",
            sqlite_where=sa.text("NOT duplicate"),
            postgresql_where=sa.text("NOT duplicate"),
        )

    op.drop_table("sim_topups")
    with op.batch_alter_table("otp_challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_otp_challenges_user_id_created_at")
        batch_op.drop_index("ix_otp_challenges_phone_index_created_at")

    op.drop_table("otp_challenges")
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lines_owner_id"))
        batch_op.drop_index(batch_op.f("ix_lines_next_check_at"))

    op.drop_table("lines")
    op.drop_table("users")
    op.drop_table("sim_lines")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))

    op.drop_table("audit_log")
