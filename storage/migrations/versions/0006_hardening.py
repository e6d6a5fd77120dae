"""hardening: issued wallet invoices, disputed payments, encrypted conversation data

Revision ID: 0006
Revises: 0005_one_open_charge
Create Date: 2026-12-06 19:40:00

Conversation drafts were stored as plain JSON; they become encrypted text. A migration has
no keys to encrypt old drafts with, so drafts and the conversations that need them are
forgotten (a conversation times out after 15 minutes anyway): anyone in the middle of a
flow at the upgrade starts it again.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0006"
down_revision = "0005_one_open_charge"
branch_labels = None
depends_on = None

DATA_TABLES = (("ptb_user_data", "user_id", sa.BigInteger()),
               ("ptb_chat_data", "chat_id", sa.BigInteger()),
               ("ptb_bot_data", "id", sa.SmallInteger()))


def _recreate_data_tables(data_column: Callable[[], sa.Column[object]]) -> None:
    op.execute(sa.text("DELETE FROM ptb_conversations"))
    for table, key, key_type in DATA_TABLES:
        op.drop_table(table)
        op.create_table(
            table,
            sa.Column(key, key_type, autoincrement=False, nullable=False),
            data_column(),
            sa.PrimaryKeyConstraint(key, name=op.f(f"pk_{table}")),
        )


def upgrade() -> None:
    _recreate_data_tables(lambda: sa.Column("data_enc", sa.Text(), nullable=False))

    op.create_table(
        "wallet_invoices",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("price_currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payment_id", BIG_ID, nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_wallet_invoices_amount_positive")),
        sa.CheckConstraint("price_minor > 0", name=op.f("ck_wallet_invoices_price_positive")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_wallet_invoices_user_id_users")),
        sa.ForeignKeyConstraint(["payment_id"], ["wallet_payments.id"],
                                name=op.f("fk_wallet_invoices_payment_id_wallet_payments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_invoices")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_wallet_invoices_payment_id")),
    )
    with op.batch_alter_table("wallet_invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallet_invoices_user_id"), ["user_id"],
                              unique=False)

    op.create_table(
        "payment_disputes",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("charge_index", sa.String(length=64), nullable=False),
        sa.Column("charge_enc", sa.Text(), nullable=False),
        sa.Column("provider_charge_enc", sa.Text(), nullable=True),
        sa.Column("invoice_id", BIG_ID, nullable=True),
        sa.Column("paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("paid_currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_payment_disputes_user_id_users")),
        sa.ForeignKeyConstraint(["invoice_id"], ["wallet_invoices.id"],
                                name=op.f("fk_payment_disputes_invoice_id_wallet_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_disputes")),
        sa.UniqueConstraint("charge_index", name=op.f("uq_payment_disputes_charge_index")),
    )
    with op.batch_alter_table("payment_disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_disputes_user_id"), ["user_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_disputes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_disputes_user_id"))
    op.drop_table("payment_disputes")
    with op.batch_alter_table("wallet_invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_invoices_user_id"))
    op.drop_table("wallet_invoices")
    # Encrypted drafts cannot be turned back into plain JSON here either.
    _recreate_data_tables(lambda: sa.Column("data", sa.JSON(), nullable=False))
