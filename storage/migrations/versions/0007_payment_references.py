"""payment references encrypted: Telegram charge ids and operator references

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 02:20:00

wallet_payments kept Telegram's charge ids and operators' references ("operator:<ref>") in
plain text, and copies of them sat in ledger memos, audit details and receipts waiting in
the outbox. Now the external id column holds a blind index (still UNIQUE: a replay credits
nothing), the reference is encrypted beside it, and the copies are dropped or masked.

Old rows can only be encrypted with the keys, so this migration takes the field cipher from
storage.migrate (``topup-bot migrate`` and start-up pass it). A database with payments and
no cipher is refused rather than left half-converted.
"""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from alembic import op

from bot.domain.references import masked_reference
from storage.migrate import SchemaError

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The same label storage.payments uses; written out here so that this migration keeps
# computing what it computed when it was written.
INDEX_LABEL = "wallet-payment"


class Cipher(Protocol):
    def encrypt(self, plain: str) -> str: ...
    def decrypt(self, token: str) -> str: ...
    def blind_index(self, plain: str) -> str: ...


payments = sa.table("wallet_payments", sa.column("id", sa.BigInteger()),
                    sa.column("external_id", sa.String()),
                    sa.column("external_ref_enc", sa.Text()),
                    sa.column("provider_charge_id", sa.String()),
                    sa.column("provider_charge_enc", sa.Text()))
ledger = sa.table("ledger_entries", sa.column("id", sa.BigInteger()),
                  sa.column("kind", sa.String()), sa.column("payment_id", sa.BigInteger()),
                  sa.column("memo", sa.String()))
audit = sa.table("audit_log", sa.column("id", sa.BigInteger()),
                 sa.column("action", sa.String()), sa.column("subject", sa.String()),
                 sa.column("details", sa.JSON()))
outbox = sa.table("notifications", sa.column("id", sa.BigInteger()),
                  sa.column("kind", sa.String()), sa.column("params", sa.JSON()))


def _cipher(direction: str) -> Cipher | None:
    cipher: Cipher | None = op.get_context().config.attributes.get("cipher")
    if cipher is None and op.get_bind().execute(
            sa.select(sa.func.count()).select_from(payments)).scalar_one():
        raise SchemaError(f"migrating wallet payments {direction} needs the encryption keys: "
                           "run `topup-bot migrate` with ENCRYPTION_KEYS set")
    return cipher


def upgrade() -> None:
    cipher = _cipher("up")
    bind = op.get_bind()
    # Plain ALTERs, no batch: SQLite would rebuild the table, and the ledger's foreign keys
    # forbid dropping it. So external_ref_enc stays nullable in the schema (every write
    # sets it), and the column drops below are SQLite's own ALTER TABLE DROP COLUMN.
    op.add_column("wallet_payments", sa.Column("external_ref_enc", sa.Text(), nullable=True))
    op.add_column("wallet_payments", sa.Column("provider_charge_enc", sa.Text(), nullable=True))
    if cipher is not None:
        rows = bind.execute(sa.select(payments.c.id, payments.c.external_id,
                                      payments.c.provider_charge_id)).all()
        for row in rows:
            bind.execute(payments.update().where(payments.c.id == row.id).values(
                external_id=cipher.blind_index(f"{INDEX_LABEL}|{row.external_id}"),
                external_ref_enc=cipher.encrypt(row.external_id),
                provider_charge_enc=(cipher.encrypt(row.provider_charge_id)
                                     if row.provider_charge_id else None)))
    op.drop_column("wallet_payments", "provider_charge_id")
    # The reference is read from the payment now; the memo was a plain copy.
    bind.execute(ledger.update().where(ledger.c.kind == "operator_credit").values(memo=None))
    _rewrite_json(audit, audit.c.details, audit.c.action == "wallet.credit",
                  lambda details: _without(details, "reference"))
    _rewrite_json(outbox, outbox.c.params, outbox.c.kind == "wallet_credit", _mask_receipt)


def downgrade() -> None:
    cipher = _cipher("down")
    bind = op.get_bind()
    op.add_column("wallet_payments",
                  sa.Column("provider_charge_id", sa.String(160), nullable=True))
    if cipher is not None:
        rows = bind.execute(sa.select(payments.c.id, payments.c.external_ref_enc,
                                      payments.c.provider_charge_enc)).all()
        for row in rows:
            external_id = cipher.decrypt(row.external_ref_enc)
            bind.execute(payments.update().where(payments.c.id == row.id).values(
                external_id=external_id,
                provider_charge_id=(cipher.decrypt(row.provider_charge_enc)
                                    if row.provider_charge_enc else None)))
            if external_id.startswith("operator:"):
                bind.execute(ledger.update().where(
                    ledger.c.payment_id == row.id, ledger.c.kind == "operator_credit")
                    .values(memo=external_id.removeprefix("operator:")))
    op.drop_column("wallet_payments", "provider_charge_enc")
    op.drop_column("wallet_payments", "external_ref_enc")
    # Masked receipts and trimmed audit rows stay as they are: nothing to restore them from.


def _rewrite_json(table: Any, column: Any, where: Any, change: Any) -> None:
    bind = op.get_bind()
    for row_id, value in bind.execute(sa.select(table.c.id, column).where(where)).all():
        new = change(dict(value or {}))
        if new != value:
            bind.execute(table.update().where(table.c.id == row_id).values({column.name: new}))


def _without(details: dict[str, Any], key: str) -> dict[str, Any]:
    details.pop(key, None)
    return details


def _mask_receipt(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("charge_id"):
        params["charge_shown"] = masked_reference(str(params.pop("charge_id")))
    if params.get("reference"):
        params["reference_shown"] = masked_reference(str(params.pop("reference")))
    return params
