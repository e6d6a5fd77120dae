"""DatabasePersistence on every backend: PTB's conversations and data survive a restart."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from storage.crypto import FieldCipher
from storage.db import Database
from storage.persistence import DatabasePersistence
from storage.tables import ptb_user_data

DRAFT: dict[str, Any] = {
    "draft": {"line": "+85512345678", "amount": {"minor": 500, "currency": "USD"},
              "steps": ["pick_line", "pick_amount"], "confirmed": False, "note": None},
    "language": "km",
    "text": "សួស្តី 你好",
}


# --- conversations -----------------------------------------------------------------------

async def test_conversation_states_round_trip(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_conversation("bind", (123, 123), 1)
    await persistence.update_conversation("bind", (123, 456), "ASK_CODE")
    await persistence.update_conversation("bind", (-100_123_456_789, 7), 0)
    await persistence.update_conversation("rules", (123,), 2)

    conversations = await persistence.get_conversations("bind")

    assert conversations == {(123, 123): 1, (123, 456): "ASK_CODE", (-100_123_456_789, 7): 0}
    for key in conversations:
        assert isinstance(key, tuple)
        assert all(isinstance(part, int) for part in key)
    assert await persistence.get_conversations("rules") == {(123,): 2}
    assert await persistence.get_conversations("nothing") == {}


async def test_a_conversation_state_is_replaced(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_conversation("bind", (1, 1), 1)
    await persistence.update_conversation("bind", (1, 1), "DONE")
    assert await persistence.get_conversations("bind") == {(1, 1): "DONE"}


async def test_none_state_deletes_the_conversation(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_conversation("bind", (1, 1), 1)
    await persistence.update_conversation("bind", (2, 2), 2)
    await persistence.update_conversation("other", (1, 1), 3)

    await persistence.update_conversation("bind", (1, 1), None)
    await persistence.update_conversation("bind", (9, 9), None)  # never there: no error

    assert await persistence.get_conversations("bind") == {(2, 2): 2}
    assert await persistence.get_conversations("other") == {(1, 1): 3}


# --- user, chat and bot data -------------------------------------------------------------

async def test_user_data_round_trips(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_user_data(123, DRAFT)
    await persistence.update_user_data(456, {"n": 1})

    data = await persistence.get_user_data()

    assert dict(data) == {123: DRAFT, 456: {"n": 1}}


async def test_missing_user_gets_an_empty_dict(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_user_data(123, {"a": 1})

    data = await persistence.get_user_data()

    assert isinstance(data, defaultdict)
    assert data[999] == {}
    data[999]["fresh"] = True  # PTB writes into it
    assert data[999] == {"fresh": True}
    assert isinstance(await DatabasePersistence(db, cipher).get_user_data(), defaultdict)


async def test_user_data_is_replaced_not_merged(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_user_data(123, {"a": 1, "b": 2})
    await persistence.update_user_data(123, {"c": {"d": [1, 2]}})
    assert (await persistence.get_user_data())[123] == {"c": {"d": [1, 2]}}


async def test_drop_user_data(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_user_data(1, {"a": 1})
    await persistence.update_user_data(2, {"b": 2})

    await persistence.drop_user_data(1)
    await persistence.drop_user_data(3)  # nothing there: no error

    data = await persistence.get_user_data()
    assert dict(data) == {2: {"b": 2}}
    assert data[1] == {}


async def test_chat_data_round_trips_and_drops(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_chat_data(123, DRAFT)
    await persistence.update_chat_data(-100_987_654_321, {"group": True})
    await persistence.update_chat_data(123, {"replaced": [1, "two"]})

    data = await persistence.get_chat_data()
    assert isinstance(data, defaultdict)
    assert dict(data) == {123: {"replaced": [1, "two"]}, -100_987_654_321: {"group": True}}
    assert data[555] == {}

    await persistence.drop_chat_data(123)
    assert dict(await persistence.get_chat_data()) == {-100_987_654_321: {"group": True}}


async def test_bot_data_round_trips(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    assert await persistence.get_bot_data() == {}

    await persistence.update_bot_data(DRAFT)
    assert await persistence.get_bot_data() == DRAFT

    await persistence.update_bot_data({"version": 2})
    assert await persistence.get_bot_data() == {"version": 2}


async def test_only_user_data_and_conversations_are_stored(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    assert persistence.store_data.callback_data is False
    assert persistence.store_data.user_data is True
    assert persistence.store_data.chat_data is False  # no flow keeps chat or bot data
    assert persistence.store_data.bot_data is False
    assert await persistence.get_callback_data() is None


async def test_the_read_values_are_independent_copies(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_user_data(1, {"a": 1})
    first = await persistence.get_user_data()
    first[1]["a"] = 99
    assert (await persistence.get_user_data())[1] == {"a": 1}


# --- restart -----------------------------------------------------------------------------

async def test_a_new_persistence_sees_what_the_old_one_wrote(
        db: Database, cipher: FieldCipher) -> None:
    before = DatabasePersistence(db, cipher)
    await before.update_conversation("bind", (123, 123), "ASK_CODE")
    await before.update_conversation("bind", (5, 5), 1)
    await before.update_conversation("bind", (5, 5), None)
    await before.update_user_data(123, DRAFT)
    await before.update_chat_data(123, {"chat": 1})
    await before.update_bot_data({"started": "2026-11-25"})
    await before.update_user_data(7, {"gone": True})
    await before.drop_user_data(7)
    await before.flush()

    after = DatabasePersistence(db, cipher)

    assert await after.get_conversations("bind") == {(123, 123): "ASK_CODE"}
    user_data = await after.get_user_data()
    assert dict(user_data) == {123: DRAFT}
    assert user_data[7] == {}
    assert dict(await after.get_chat_data()) == {123: {"chat": 1}}
    assert await after.get_bot_data() == {"started": "2026-11-25"}


async def test_a_new_process_on_the_same_database_sees_it(
        db: Database, cipher: FieldCipher) -> None:
    await DatabasePersistence(db, cipher).update_conversation("bind", (42, 42), 3)
    await DatabasePersistence(db, cipher).update_user_data(42, {"step": "code"})

    reopened = Database(db.url)
    try:
        after = DatabasePersistence(reopened, cipher)
        assert await after.get_conversations("bind") == {(42, 42): 3}
        assert (await after.get_user_data())[42] == {"step": "code"}
    finally:
        await reopened.dispose()


class CountedTransactions:
    """Counts the write transactions ``db`` opens, until ``stop()``."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._db, self._monkeypatch, self._original = db, monkeypatch, db.write

        def counting_write() -> Any:
            self.count += 1
            return self._original()

        monkeypatch.setattr(db, "write", counting_write)

    def stop(self) -> None:
        self._monkeypatch.setattr(self._db, "write", self._original)


async def test_unchanged_data_is_not_written_again(db: Database, cipher: FieldCipher,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    persistence = DatabasePersistence(db, cipher)
    writes = CountedTransactions(db, monkeypatch)
    await persistence.update_chat_data(5, {})  # absent reads as {}: nothing to write
    await persistence.update_user_data(5, {"draft": 1})
    await persistence.update_user_data(5, {"draft": 1})
    assert writes.count == 1
    await persistence.update_user_data(5, {"draft": 2})
    assert writes.count == 2
    writes.stop()
    assert dict(await DatabasePersistence(db, cipher).get_user_data()) == {5: {"draft": 2}}


async def test_a_failed_write_is_tried_again(db: Database, cipher: FieldCipher,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    persistence = DatabasePersistence(db, cipher)
    original = db.write

    def broken() -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(db, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        await persistence.update_user_data(6, {"draft": 1})
    monkeypatch.setattr(db, "write", original)
    await persistence.update_user_data(6, {"draft": 1})
    assert dict(await DatabasePersistence(db, cipher).get_user_data()) == {6: {"draft": 1}}


async def test_writes_handed_over_together_share_one_transaction(
        db: Database, cipher: FieldCipher, monkeypatch: pytest.MonkeyPatch) -> None:
    persistence = DatabasePersistence(db, cipher)
    transactions = CountedTransactions(db, monkeypatch)
    await asyncio.gather(
        persistence.update_user_data(7, {"draft": 1}),
        persistence.update_user_data(8, {"draft": 2}),
        persistence.update_conversation("binding", (7, 7), "bind:code"),
        persistence.update_conversation("binding", (8, 8), None))
    assert transactions.count == 1
    transactions.stop()
    fresh = DatabasePersistence(db, cipher)
    assert dict(await fresh.get_user_data()) == {7: {"draft": 1}, 8: {"draft": 2}}
    assert await fresh.get_conversations("binding") == {(7, 7): "bind:code"}


async def test_one_bad_write_fails_alone_and_the_others_are_stored(
        db: Database, cipher: FieldCipher) -> None:
    persistence = DatabasePersistence(db, cipher)
    results = await asyncio.gather(
        persistence.update_user_data(9, {"draft": 1}),
        persistence.update_user_data(10, {"bad": object()}),  # not JSON: this one fails
        persistence.update_conversation("binding", (9, 9), "bind:code"),
        return_exceptions=True)
    assert [isinstance(result, Exception) for result in results] == [False, True, False]
    fresh = DatabasePersistence(db, cipher)
    assert dict(await fresh.get_user_data()) == {9: {"draft": 1}}
    assert await fresh.get_conversations("binding") == {(9, 9): "bind:code"}


async def test_a_hand_over_of_many_kinds_keeps_its_order_in_one_transaction(
        db: Database, cipher: FieldCipher, monkeypatch: pytest.MonkeyPatch) -> None:
    persistence = DatabasePersistence(db, cipher)
    await persistence.update_conversation("binding", (1, 1), "bind:code")
    await persistence.update_conversation("binding", (2, 2), "bind:code")
    await persistence.update_user_data(3, {"gone": True})
    transactions = CountedTransactions(db, monkeypatch)
    await asyncio.gather(
        persistence.update_conversation("binding", (1, 1), None),  # ended ...
        persistence.update_conversation("binding", (2, 2), None),
        persistence.update_conversation("binding", (1, 1), "bind:number"),  # ... and restarted
        persistence.update_user_data(4, {"draft": 4}),
        persistence.drop_user_data(3),
        persistence.update_user_data(3, {"back": True}))
    assert transactions.count == 1
    transactions.stop()
    fresh = DatabasePersistence(db, cipher)
    assert await fresh.get_conversations("binding") == {(1, 1): "bind:number"}
    assert dict(await fresh.get_user_data()) == {3: {"back": True}, 4: {"draft": 4}}


async def test_unchanged_bot_data_is_not_written_every_interval(
        db: Database, cipher: FieldCipher, monkeypatch: pytest.MonkeyPatch) -> None:
    await DatabasePersistence(db, cipher).update_bot_data({"started": "2026-11-30"})
    persistence = DatabasePersistence(db, cipher)
    assert await persistence.get_bot_data() == {"started": "2026-11-30"}
    writes = CountedTransactions(db, monkeypatch)
    await persistence.update_bot_data({"started": "2026-11-30"})
    assert writes.count == 0
    await persistence.update_bot_data({"started": "2026-12-01"})
    assert writes.count == 1
    writes.stop()
    assert await DatabasePersistence(db, cipher).get_bot_data() == {"started": "2026-12-01"}


async def test_data_is_stored_encrypted_never_as_plain_json(
        db: Database, cipher: FieldCipher) -> None:
    """A draft's phone number must not be readable in the database (or its file)."""
    await DatabasePersistence(db, cipher).update_user_data(11, {"bind": "+85512345678"})
    async with db.read() as conn:
        (stored,) = (await conn.execute(select(ptb_user_data.c.data_enc))).scalars().all()
    assert "85512345678" not in stored
    assert json.loads(cipher.decrypt(stored)) == {"bind": "+85512345678"}
