"""eSIM lines, and the simulated eSIM provider's own tables

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:40:00

A line is now a SIM (a phone number) or an eSIM (an ICCID, usually data-only: no number).
``lines.kind`` says which; the number columns may be NULL for an eSIM only (a CHECK keeps
every SIM line's number). An eSIM line being ordered has no ICCID yet: it gets one when the
order succeeds.

On SQLite relaxing NOT NULL rebuilds the table; storage.migrate runs migrations with foreign
keys off there (the rebuild drops the old copy, which would otherwise cascade into the rows
that reference it) and checks them all before committing.

Downgrading refuses while eSIM lines exist: they cannot be put back without numbers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.migrate import SchemaError

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SIM_HAS_NUMBER = "kind <> 'sim' OR (phone_enc IS NOT NULL AND phone_index IS NOT NULL)"


def upgrade() -> None:
    with op.batch_alter_table("lines", recreate="auto") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=8), nullable=False,
                                   server_default="sim"))
        batch.alter_column("phone_enc", existing_type=sa.Text(), nullable=True)
        batch.alter_column("phone_index", existing_type=sa.String(length=64), nullable=True)
        batch.create_check_constraint(op.f("ck_lines_sim_has_number"), sa.text(SIM_HAS_NUMBER))
    op.create_table(
        "sim_esims",
        sa.Column("iccid_index", sa.String(length=64), nullable=False),
        sa.Column("iccid_enc", sa.Text(), nullable=False),
        sa.Column("order_id", BIG_ID, nullable=False),
        sa.Column("package_id", sa.String(length=64), nullable=False),
        sa.Column("matching_id", sa.String(length=64), nullable=False),
        sa.Column("total_mb", sa.Integer(), nullable=True),
        sa.Column("used_mb", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("daily_mb", sa.Integer(), nullable=False),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("iccid_index", name=op.f("pk_sim_esims")),
        sa.UniqueConstraint("matching_id", name=op.f("uq_sim_esims_matching_id")),
    )
    op.create_table(
        "sim_esim_orders",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("package_id", sa.String(length=64), nullable=False),
        sa.Column("iccid_index", sa.String(length=64), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sim_esim_orders")),
    )
    op.create_index(op.f("ix_sim_esim_orders_description"), "sim_esim_orders",
                    ["description"], unique=False)
    op.create_index(op.f("ix_sim_esim_orders_created_at"), "sim_esim_orders", ["created_at"],
                    unique=False)


def downgrade() -> None:
    esims = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM lines WHERE kind <> 'sim'")).scalar_one()
    if esims:
        raise SchemaError(f"{esims} eSIM lines exist: revision 0009 cannot hold them")
    op.drop_index(op.f("ix_sim_esim_orders_created_at"), table_name="sim_esim_orders")
    op.drop_index(op.f("ix_sim_esim_orders_description"), table_name="sim_esim_orders")
    op.drop_table("sim_esim_orders")
    op.drop_table("sim_esims")
    with op.batch_alter_table("lines", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_lines_sim_has_number"), type_="check")
        batch.alter_column("phone_index", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("phone_enc", existing_type=sa.Text(), nullable=False)
        batch.drop_column("kind")
