"""Bakong KHQR invoices

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:50:00

One row per KHQR the wallet issued: polled by its md5 until paid or until its expiry plus a
grace period; credited once (md5 and the Bakong transaction hash are UNIQUE).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "khqr_invoices",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("bill_number", sa.String(length=25), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_minor", sa.BigInteger(), nullable=False),
        sa.Column("credit_currency", sa.String(length=3), nullable=False),
        sa.Column("khr_per_usd", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("next_check_at", WHEN, nullable=True),
        sa.Column("claimed_until", WHEN, nullable=True),
        sa.Column("checks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_checked_at", WHEN, nullable=True),
        sa.Column("closed_at", WHEN, nullable=True),
        sa.Column("paid_at", WHEN, nullable=True),
        sa.Column("transaction_index", sa.String(length=64), nullable=True),
        sa.Column("transaction_hash_enc", sa.Text(), nullable=True),
        sa.Column("paid_minor", sa.BigInteger(), nullable=True),
        sa.Column("paid_currency", sa.String(length=3), nullable=True),
        sa.Column("payer_bank", sa.String(length=32), nullable=True),
        sa.Column("payer_account_enc", sa.Text(), nullable=True),
        sa.Column("amount_differs", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("payment_id", BIG_ID, nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_khqr_invoices_amount_positive")),
        sa.CheckConstraint("credit_minor > 0", name=op.f("ck_khqr_invoices_credit_positive")),
        sa.CheckConstraint("state IN ('open', 'paid', 'expired', 'cancelled')",
                           name=op.f("ck_khqr_invoices_state_known")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_khqr_invoices_user_id_users")),
        sa.ForeignKeyConstraint(["payment_id"], ["wallet_payments.id"],
                                name=op.f("fk_khqr_invoices_payment_id_wallet_payments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_khqr_invoices")),
        sa.UniqueConstraint("md5", name=op.f("uq_khqr_invoices_md5")),
        sa.UniqueConstraint("bill_number", name=op.f("uq_khqr_invoices_bill_number")),
        sa.UniqueConstraint("transaction_index", name=op.f("uq_khqr_invoices_transaction_index")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_khqr_invoices_payment_id")),
    )
    op.create_index(op.f("ix_khqr_invoices_user_id"), "khqr_invoices", ["user_id"])
    op.create_index("ix_khqr_invoices_next_check_at", "khqr_invoices", ["next_check_at"])


def downgrade() -> None:
    op.drop_index("ix_khqr_invoices_next_check_at", table_name="khqr_invoices")
    op.drop_index(op.f("ix_khqr_invoices_user_id"), table_name="khqr_invoices")
    op.drop_table("khqr_invoices")
