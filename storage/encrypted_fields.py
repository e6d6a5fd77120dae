"""Every encrypted column in the schema, and batch access to them for key rotation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import (
    charges,
    khqr_invoices,
    lines,
    payment_disputes,
    ptb_bot_data,
    ptb_chat_data,
    ptb_user_data,
    sim_esims,
    sim_lines,
    support_messages,
    wallet_payments,
)


@dataclass(frozen=True)
class EncryptedColumns:
    table: Table
    key: Column[object]
    columns: tuple[Column[object], ...]


# A table that gains an encrypted column is listed here, or rotate-keys will miss it.
ENCRYPTED: tuple[EncryptedColumns, ...] = (
    EncryptedColumns(lines, lines.c.id, (lines.c.phone_enc, lines.c.iccid_enc)),
    EncryptedColumns(sim_lines, sim_lines.c.phone_index, (sim_lines.c.phone_enc,)),
    EncryptedColumns(sim_esims, sim_esims.c.iccid_index, (sim_esims.c.iccid_enc,)),
    EncryptedColumns(charges, charges.c.id, (charges.c.provider_tx_enc,)),
    EncryptedColumns(wallet_payments, wallet_payments.c.id,
                     (wallet_payments.c.external_ref_enc, wallet_payments.c.provider_charge_enc)),
    EncryptedColumns(payment_disputes, payment_disputes.c.id,
                     (payment_disputes.c.charge_enc, payment_disputes.c.provider_charge_enc)),
    EncryptedColumns(support_messages, support_messages.c.id, (support_messages.c.text_enc,)),
    EncryptedColumns(khqr_invoices, khqr_invoices.c.id,
                     (khqr_invoices.c.transaction_hash_enc, khqr_invoices.c.payer_account_enc)),
    # Conversation drafts (numbers being proven, forwarded SMS texts), whole.
    EncryptedColumns(ptb_user_data, ptb_user_data.c.user_id, (ptb_user_data.c.data_enc,)),
    EncryptedColumns(ptb_chat_data, ptb_chat_data.c.chat_id, (ptb_chat_data.c.data_enc,)),
    EncryptedColumns(ptb_bot_data, ptb_bot_data.c.id, (ptb_bot_data.c.data_enc,)),
)


class EncryptedFieldsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def batch(self, spec: EncryptedColumns, after: object | None,
                    limit: int) -> list[tuple[object, dict[str, str | None]]]:
        """Up to ``limit`` rows after key ``after``, in key order: (key, {column: token})."""
        query = select(spec.key, *spec.columns).order_by(spec.key).limit(limit)
        query = query.where(or_(*(column.is_not(None) for column in spec.columns)))
        if after is not None:
            query = query.where(spec.key > after)
        rows = (await self._conn.execute(query)).all()
        return [(row[0], {c.name: row[i + 1] for i, c in enumerate(spec.columns)})
                for row in rows]

    async def replace(self, spec: EncryptedColumns, key: object,
                      values: dict[str, str]) -> None:
        await self._conn.execute(update(spec.table).where(spec.key == key).values(**values))
