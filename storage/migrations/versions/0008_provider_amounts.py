"""provider amounts: what the line received and what the provider took, per charge

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:00:00

Real providers (Reloadly, DingConnect) report the amount delivered to the line (in its
operator's currency: dollars or riel), their cost to us, and a fee or a discount. A charge
keeps them beside the provider's transaction id; the receipt shows what the line received.
Nullable: the simulated carrier and charges before this revision have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (("delivered_minor", sa.BigInteger()), ("delivered_currency", sa.String(3)),
           ("provider_cost_minor", sa.BigInteger()), ("provider_fee_minor", sa.BigInteger()),
           ("provider_discount_minor", sa.BigInteger()), ("provider_currency", sa.String(3)))


def upgrade() -> None:
    # Plain ALTERs: SQLite adds nullable columns in place (no rebuild of a referenced table).
    for name, kind in COLUMNS:
        op.add_column("charges", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _kind in reversed(COLUMNS):
        op.drop_column("charges", name)
