"""support requests and their messages; users' monthly summary and promotions flags

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 09:00:00

A support request (optionally about one charge; flagged when the charge was reported doubled
or not received) and its messages either way, their text encrypted. The outbox's (chat,
message id) is indexed: an admin's reply names the message it answers. Two user flags,
off by default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)
OPEN_TICKET = "status = 'open'"

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_summary", sa.Boolean(),
                                      server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("promotions", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    op.create_index("ix_notifications_chat_id_message_id", "notifications",
                    ["chat_id", "message_id"], unique=False)
    op.create_table(
        "support_tickets",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("charge_id", BIG_ID, nullable=True),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("flagged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("resolved_at", WHEN, nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("status IN ('open', 'resolved')",
                           name=op.f("ck_support_tickets_status_known")),
        sa.CheckConstraint("category IN ('general', 'failed', 'charged_twice', "
                           "'not_received')", name=op.f("ck_support_tickets_category_known")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_support_tickets_user_id_users")),
        sa.ForeignKeyConstraint(["charge_id"], ["charges.id"],
                                name=op.f("fk_support_tickets_charge_id_charges")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_tickets")),
    )
    op.create_index(op.f("ix_support_tickets_user_id"), "support_tickets", ["user_id"])
    op.create_index("ix_support_tickets_status_flagged", "support_tickets",
                    ["status", "flagged"])
    op.create_index("uq_support_tickets_charge_id_open", "support_tickets", ["charge_id"],
                    unique=True, sqlite_where=sa.text(OPEN_TICKET),
                    postgresql_where=sa.text(OPEN_TICKET))
    op.create_table(
        "support_messages",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", BIG_ID, nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("text_enc", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.CheckConstraint("direction IN ('user', 'admin')",
                           name=op.f("ck_support_messages_direction_known")),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["support_tickets.id"], ondelete="CASCADE",
            name=op.f("fk_support_messages_ticket_id_support_tickets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_messages")),
        sa.UniqueConstraint("source", name=op.f("uq_support_messages_source")),
    )
    op.create_index(op.f("ix_support_messages_ticket_id"), "support_messages", ["ticket_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_support_messages_ticket_id"), table_name="support_messages")
    op.drop_table("support_messages")
    op.drop_index("uq_support_tickets_charge_id_open", table_name="support_tickets")
    op.drop_index("ix_support_tickets_status_flagged", table_name="support_tickets")
    op.drop_index(op.f("ix_support_tickets_user_id"), table_name="support_tickets")
    op.drop_table("support_tickets")
    op.drop_index("ix_notifications_chat_id_message_id", table_name="notifications")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("promotions")
        batch_op.drop_column("monthly_summary")
