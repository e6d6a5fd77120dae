"""A bound line for service tests: its owner created first, as binding does."""

from __future__ import annotations

from bot.clock import ManualClock
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.users import UsersRepository

CELLCARD = parse_cambodian_mobile("012345678")


async def add_line(db: Database, cipher: FieldCipher, clock: ManualClock, owner_id: int,
                   number: MobileNumber = CELLCARD) -> int:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(owner_id, language="en", now=clock.now())
        line = await LinesRepository(conn, cipher).add(owner_id=owner_id, number=number,
                                                       now=clock.now())
    return line.id
