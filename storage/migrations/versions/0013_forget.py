"""forgetting a user (/forget): forgotten users and lines, codes that outlive their user

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 09:00:00

``/forget`` keeps what the ledger must keep and nothing that names the user:
- ``users.forgotten_at``: the user's row stays (its id is the ledger's key) without their
  settings; the bot treats them as new.
- ``lines.forgotten_at``: a line that kept charges (which reference it, NOT NULL) stays as a
  tombstone with no number, no blind index, no ICCID and no name, so the CHECK that a SIM
  line has a number allows a forgotten one.
- ``otp_challenges.user_id`` may be NULL: a code sent in the last hour, or a lockout still
  running, keeps counting against the number (the hourly cap and the lockout belong to the
  number), but no longer names who asked.

On SQLite the CHECK and the NOT NULL change rebuild ``lines`` and ``otp_challenges``;
storage.migrate runs migrations with foreign keys off there (see 0010) and checks them all
before committing.

Downgrading refuses while forgotten lines exist (revision 0012 cannot hold a SIM line
without its number); codes that no longer name a user are deleted (they only held back new
codes to a number, for an hour at most).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.migrate import SchemaError

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)
SIM_HAS_NUMBER = "kind <> 'sim' OR (phone_enc IS NOT NULL AND phone_index IS NOT NULL)"
SIM_HAS_NUMBER_OR_FORGOTTEN = ("kind <> 'sim' OR forgotten_at IS NOT NULL "
                               "OR (phone_enc IS NOT NULL AND phone_index IS NOT NULL)")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch:
        batch.add_column(sa.Column("forgotten_at", WHEN, nullable=True))
    with op.batch_alter_table("lines", recreate="auto") as batch:
        batch.add_column(sa.Column("forgotten_at", WHEN, nullable=True))
        batch.drop_constraint(op.f("ck_lines_sim_has_number"), type_="check")
        batch.create_check_constraint(op.f("ck_lines_sim_has_number"),
                                      sa.text(SIM_HAS_NUMBER_OR_FORGOTTEN))
    with op.batch_alter_table("otp_challenges", recreate="auto") as batch:
        batch.alter_column("user_id", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    bind = op.get_bind()
    forgotten = bind.execute(sa.text(
        "SELECT COUNT(*) FROM lines WHERE forgotten_at IS NOT NULL")).scalar_one()
    if forgotten:
        raise SchemaError(f"{forgotten} forgotten lines exist: revision 0012 cannot hold them")
    bind.execute(sa.text("DELETE FROM otp_challenges WHERE user_id IS NULL"))
    with op.batch_alter_table("otp_challenges", recreate="auto") as batch:
        batch.alter_column("user_id", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("lines", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_lines_sim_has_number"), type_="check")
        batch.create_check_constraint(op.f("ck_lines_sim_has_number"), sa.text(SIM_HAS_NUMBER))
        batch.drop_column("forgotten_at")
    with op.batch_alter_table("users", schema=None) as batch:
        batch.drop_column("forgotten_at")
