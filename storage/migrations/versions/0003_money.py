"""money: charges, holds, ledger, wallet payments, notifications outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 07:17:09.669853
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notifications_dedupe_key")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_notifications_chat_id_status_id", ["chat_id", "status", "id"], unique=False
        )

    op.create_table(
        "wallet_payments",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=160), nullable=False),
        sa.Column("provider_charge_id", sa.String(length=160), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payload", sa.String(length=128), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_wallet_payments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_wallet_payments_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_payments")),
        sa.UniqueConstraint("external_id", name=op.f("uq_wallet_payments_external_id")),
    )
    with op.batch_alter_table("wallet_payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallet_payments_user_id"), ["user_id"], unique=False)

    op.create_table(
        "charges",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("line_id", BIG_ID, nullable=False),
        sa.Column("rule_id", BIG_ID, nullable=True),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("provider_tx_enc", sa.Text(), nullable=True),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=True),
        sa.Column("validity_end_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_charges_amount_positive")),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_charges_line_id_lines")),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["recharge_rules.id"], name=op.f("fk_charges_rule_id_recharge_rules")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_charges_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charges")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_charges_idempotency_key")),
        sa.UniqueConstraint("reference", name=op.f("uq_charges_reference")),
    )
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_charges_line_id"), ["line_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_charges_next_attempt_at"), ["next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_charges_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_charges_user_id"), ["user_id"], unique=False)

    op.create_table(
        "holds",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("charge_id", BIG_ID, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_holds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_holds_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_holds_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_holds_charge_id")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_holds_user_id"), ["user_id"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("charge_id", BIG_ID, nullable=True),
        sa.Column("payment_id", BIG_ID, nullable=True),
        sa.Column("memo", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_ledger_entries_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["wallet_payments.id"],
            name=op.f("fk_ledger_entries_payment_id_wallet_payments"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ledger_entries_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_user_id_currency", ["user_id", "currency"], unique=False
        )
        batch_op.create_index("uq_ledger_entries_charge_kind", ["charge_id", "kind"], unique=True)
        batch_op.create_index("uq_ledger_entries_payment_kind", ["payment_id", "kind"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("uq_ledger_entries_payment_kind")
        batch_op.drop_index("uq_ledger_entries_charge_kind")
        batch_op.drop_index("ix_ledger_entries_user_id_currency")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holds_user_id"))

    op.drop_table("holds")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_charges_user_id"))
        batch_op.drop_index(batch_op.f("ix_charges_state"))
        batch_op.drop_index(batch_op.f("ix_charges_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_charges_line_id"))

    op.drop_table("charges")
    with op.batch_alter_table("wallet_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_payments_user_id"))

    op.drop_table("wallet_payments")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_chat_id_status_id")
        batch_op.drop_index("ix_notifications_status_next_attempt_at")

    op.drop_table("notifications")
