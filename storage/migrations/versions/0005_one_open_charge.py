"""one open charge per line: a partial unique index on charges(line_id) while a charge is
awaiting approval, approved or submitted

Revision ID: 0005_one_open_charge
Revises: 0004
Create Date: 2026-12-08 00:00:00

Databases written before this revision can hold several open charges on one line (a "Top
up now" tapped while a rule's request waited). Before the index is built, each such line
keeps one:

* the line's charge in flight (approved or submitted: funds held, perhaps at the carrier)
  when it has one, else its newest request awaiting approval;
* every other request awaiting approval on it expires (no funds are held for a request),
  with ``failure_reason`` "another_open_charge", an audit row, and its approval message
  dropped from the outbox if it was not sent yet (a sent one answers "expired" when tapped);
* a line with two or more charges in flight cannot be settled by a migration (money is
  held for each and may be at the carrier): the upgrade is refused, naming the charges,
  and changes nothing; the previous release settles them within minutes, then upgrade.

The downgrade drops the index; the expired requests stay expired.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage.migrate import SchemaError

revision = "0005_one_open_charge"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "uq_charges_line_id_open"
OPEN = ("awaiting_approval", "approved", "submitted")
IN_FLIGHT = ("approved", "submitted")
PREDICATE = "state IN ('awaiting_approval', 'approved', 'submitted')"
REASON = "another_open_charge"

charges = sa.table("charges", sa.column("id", sa.BigInteger()),
                   sa.column("line_id", sa.BigInteger()), sa.column("state", sa.String()),
                   sa.column("cause", sa.String()), sa.column("amount_minor", sa.BigInteger()),
                   sa.column("currency", sa.String()),
                   sa.column("next_attempt_at", sa.DateTime(timezone=True)),
                   sa.column("failure_reason", sa.String()),
                   sa.column("updated_at", sa.DateTime(timezone=True)))
audit_log = sa.table("audit_log", sa.column("at", sa.DateTime(timezone=True)),
                     sa.column("actor", sa.String()), sa.column("action", sa.String()),
                     sa.column("subject", sa.String()), sa.column("details", sa.JSON()))
notifications = sa.table("notifications", sa.column("dedupe_key", sa.String()),
                         sa.column("status", sa.String()), sa.column("last_error", sa.String()))


def _surplus(rows: list[Any]) -> tuple[list[tuple[Any, int]], list[list[int]]]:
    """(request to expire, charge kept instead) pairs, and the groups of charges in flight
    together on one line (which no migration can settle)."""
    by_line: dict[int, list[Any]] = {}
    for row in rows:
        by_line.setdefault(row.line_id, []).append(row)
    expire: list[tuple[Any, int]] = []
    conflicts: list[list[int]] = []
    for line_rows in by_line.values():
        if len(line_rows) < 2:
            continue
        flying = [row for row in line_rows if row.state in IN_FLIGHT]
        if len(flying) > 1:
            conflicts.append([row.id for row in flying])
            continue
        kept = flying[0] if flying else max(line_rows, key=lambda row: row.id)
        expire.extend((row, kept.id) for row in line_rows if row.id != kept.id)
    return expire, conflicts


def upgrade() -> None:
    bind = op.get_bind()
    rows = list(bind.execute(
        sa.select(charges.c.id, charges.c.line_id, charges.c.state, charges.c.cause,
                  charges.c.amount_minor, charges.c.currency)
        .where(charges.c.state.in_(OPEN)).order_by(charges.c.line_id, charges.c.id)))
    expire, conflicts = _surplus(rows)
    if conflicts:
        listed = "; ".join(", ".join(str(i) for i in ids) for ids in conflicts)
        raise SchemaError(
            "cannot migrate to one open charge per line: these charges are in flight on one "
            f"line together ({listed}). Run the previous release until they settle "
            "(`topup-bot charges submitted`), then migrate again")
    now = datetime.now(UTC)
    at = now.replace(tzinfo=None) if bind.dialect.name == "sqlite" else now
    for row, kept in expire:
        # Only waiting requests expire (the WHERE says so); one in flight is left alone.
        bind.execute(charges.update().where(charges.c.id == row.id,
                                            charges.c.state == "awaiting_approval")
                     .values(state="expired", failure_reason=REASON, next_attempt_at=None,
                             updated_at=at))
        bind.execute(audit_log.insert().values(
            at=at, actor="migration", action="charge.expired", subject=str(row.id),
            details={"amount_minor": row.amount_minor, "currency": row.currency,
                     "line": row.line_id, "cause": row.cause, "reason": REASON,
                     "kept": kept, "revision": revision}))
        bind.execute(notifications.update().where(
            notifications.c.dedupe_key == f"approval:{row.id}",
            notifications.c.status == "pending").values(status="dropped", last_error=REASON))
    op.create_index(INDEX, "charges", ["line_id"], unique=True,
                    sqlite_where=sa.text(PREDICATE), postgresql_where=sa.text(PREDICATE))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="charges")
