"""charge trigger: the reading a rule charged on, kept with its charge

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 09:00:00

An approval request and a rule's receipt say which reading caused the charge ("balance
$0.50, read from the carrier 3 minutes ago"), so the user can judge it before approving.
The charge keeps that reading itself, not a reference to its row: readings of a line are
pruned and deleted with it, an estimate has no row, and a sweep stores its fresh readings
after the charges it fires. Only the figure the rule fired on is kept (the balance, the data
left or the validity end), with its source, when it was read and which provider read it (an
eSIM's). Nullable: manual and calendar charges have no reading, and charges made before this
revision did not keep one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)
COLUMNS = (("trigger_source", sa.String(16)), ("trigger_read_at", WHEN),
           ("trigger_balance_minor", sa.BigInteger()), ("trigger_currency", sa.String(3)),
           ("trigger_data_mb", sa.Integer()), ("trigger_validity_end", WHEN),
           ("trigger_read_by", sa.String(32)))


def upgrade() -> None:
    # Plain ALTERs: SQLite adds nullable columns in place (no rebuild of a referenced table).
    for name, kind in COLUMNS:
        op.add_column("charges", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _kind in reversed(COLUMNS):
        op.drop_column("charges", name)
