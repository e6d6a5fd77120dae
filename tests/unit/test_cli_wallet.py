"""`topup-bot wallet credit`: the line it prints, idempotency per reference, bad input as one
clear error (bot/cli_wallet.py; bot/__main__.py only parses the arguments)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli_wallet import WalletCliError, wallet_credit
from bot.domain.money import Money
from bot.settings import load_settings
from bot.wiring import Components, build_components
from storage.db import Database
from storage.wallet import WalletRepository


@pytest.fixture
async def components(db: Database, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Components]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", db.url)
    for name in ("ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "DEFAULT_CURRENCY", "DEFAULT_TIMEZONE",
                 "PAYMENTS_PROVIDER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    built = build_components(load_settings(env_file=None))
    yield built
    await built.db.dispose()


async def balance(db: Database, user_id: int, currency: str = "USD") -> Money:
    async with db.read() as conn:
        return await WalletRepository(conn).available(user_id, currency)


async def test_credit_prints_what_it_did_and_a_rerun_changes_nothing(
        components: Components, db: Database) -> None:
    first = await wallet_credit(components, "4242", "10.50", "bank TX 991")
    again = await wallet_credit(components, 4242, "$10.50", "bank  TX 991")

    assert first.startswith("Credited 10.50 USD to user 4242 (reference 'bank TX 991'")
    assert "Wallet balance: 10.50 USD" in first
    assert again.startswith("Already credited on ")
    assert "Nothing was changed" in again
    assert await balance(db, 4242) == Money(1050, "USD")


async def test_a_reused_reference_is_an_error(components: Components, db: Database) -> None:
    await wallet_credit(components, "4242", "10", "cash-1")

    with pytest.raises(WalletCliError, match=r"already used .* 10.00 USD to user 4242"):
        await wallet_credit(components, "4343", "10", "cash-1")
    with pytest.raises(WalletCliError, match="already used"):
        await wallet_credit(components, "4242", "11", "cash-1")
    assert await balance(db, 4343) == Money(0, "USD")


async def test_riel_goes_to_the_riel_wallet(components: Components, db: Database) -> None:
    line = await wallet_credit(components, "4242", "40000 KHR", "khr-cash-1")

    assert "Credited 40000 KHR" in line
    assert await balance(db, 4242, "KHR") == Money(4_000_000, "KHR")


@pytest.mark.parametrize(("user_id", "amount", "reference", "message"), [
    ("abc", "10", "r", "not a Telegram user id"),
    ("0", "10", "r", "not a Telegram user id"),
    ("-7", "10", "r", "not a Telegram user id"),
    ("99999999999999999999", "10", "r", "not a Telegram user id"),
    ("4242", "ten", "r", "not an amount"),
    ("4242", "-5", "r", "not an amount"),
    ("4242", "0", "r", "not an amount"),
    ("4242", "10.555", "r", "not an amount"),
    ("4242", "5000", "r", "not an amount"),
    ("4242", "100 XTR", "r", "USD or KHR"),
    ("4242", "10", "", "a reference is needed"),
    ("4242", "10", "x" * 65, "longer than 64"),
])
async def test_bad_input_is_one_clear_error(components: Components, db: Database,
                                            user_id: str, amount: str, reference: str,
                                            message: str) -> None:
    with pytest.raises(WalletCliError, match=message):
        await wallet_credit(components, user_id, amount, reference)

    assert await balance(db, 4242) == Money(0, "USD")
