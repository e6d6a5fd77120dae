"""Settings: defaults, .env files, and one-line errors that name the variable to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import (
    GatewaySettings,
    LocaleSettings,
    LoggingSettings,
    SchedulerSettings,
    SecuritySettings,
    SettingsError,
    StorageSettings,
    TelegramSettings,
    load_settings,
)
from storage.crypto import generate_fernet_key

TOKEN = "123456789:AAH-example_token_abcdefghijklmnop"

_ALL_VARIABLES = sorted({
    field.alias
    for section in (TelegramSettings, StorageSettings, SecuritySettings, LocaleSettings,
                    GatewaySettings, SchedulerSettings, LoggingSettings)
    for field in section.model_fields.values() if field.alias
})


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env is read even if env_file were honoured


def test_every_setting_is_cleared_by_the_fixture() -> None:
    assert "TELEGRAM_BOT_TOKEN" in _ALL_VARIABLES
    assert "DATABASE_URL" in _ALL_VARIABLES
    assert "ENCRYPTION_KEYS" in _ALL_VARIABLES


def test_defaults() -> None:
    settings = load_settings(env_file=None)
    assert settings.storage.data_dir == Path("data")
    assert settings.storage.database_url is None
    assert settings.storage.url == "sqlite+aiosqlite:///data/topup.db"
    assert settings.storage.url.startswith("sqlite+aiosqlite:///")
    assert settings.locale.default_timezone == "Asia/Phnom_Penh"
    assert settings.locale.zone.key == "Asia/Phnom_Penh"
    assert settings.locale.default_currency == "USD"
    assert settings.gateways.carrier_backend == "simulated"
    assert settings.gateways.sms_backend == "console"
    assert settings.logging.log_level == "INFO"
    assert settings.logging.level == 20
    assert settings.telegram.api_root == "https://api.telegram.org"
    assert settings.telegram.bot_token is None
    assert settings.telegram.admin_chat_ids == []
    assert settings.security.encryption_keys == []
    assert settings.scheduler.sweep_interval_seconds == 60
    assert (settings.scheduler.sweep_batch, settings.scheduler.sweep_concurrency,
            settings.scheduler.read_timeout_seconds) == (500, 128, 10.0)


def test_database_url_lives_in_data_dir(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    settings = load_settings(env_file=None)
    assert settings.storage.data_dir == tmp_path / "state"
    assert settings.storage.url == f"sqlite+aiosqlite:///{(tmp_path / 'state').as_posix()}/topup.db"


def test_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / "custom.env"
    env.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nLOG_LEVEL=debug\nDEFAULT_CURRENCY=khr\n"
                   "ADMIN_CHAT_IDS=42,43\n", encoding="utf-8")
    settings = load_settings(env_file=env)
    assert settings.telegram.require_token() == TOKEN
    assert settings.logging.log_level == "DEBUG"
    assert settings.locale.default_currency == "KHR"
    assert settings.telegram.admin_chat_ids == [42, 43]


def test_environment_wins_over_env_file(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("LOG_LEVEL=DEBUG\n", encoding="utf-8")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    assert load_settings(env_file=env).logging.log_level == "ERROR"


def test_env_file_none_ignores_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=DEBUG\n", encoding="utf-8")
    assert load_settings(env_file=None).logging.log_level == "INFO"
    assert load_settings(env_file=tmp_path / ".env").logging.log_level == "DEBUG"


def test_api_root_has_no_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", "http://127.0.0.1:8081/")
    settings = load_settings(env_file=None)
    assert settings.telegram.api_root == "http://127.0.0.1:8081"
    assert settings.masked()["TELEGRAM_API_BASE_URL"] == "http://127.0.0.1:8081"


def test_admin_chat_ids_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_CHAT_IDS", "1, 2,3")
    assert load_settings(env_file=None).telegram.admin_chat_ids == [1, 2, 3]


def test_admin_chat_ids_must_be_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_CHAT_IDS", "x")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    assert str(caught.value).startswith("ADMIN_CHAT_IDS")


@pytest.mark.parametrize(("name", "value"), [
    ("DEFAULT_TIMEZONE", "Mars/Olympus_Mons"),
    ("DEFAULT_TIMEZONE", "../etc/passwd"),
    ("DEFAULT_CURRENCY", "EUR"),
    ("DEFAULT_CURRENCY", "XTR"),
    ("LOG_LEVEL", "loud"),
    ("SWEEP_INTERVAL_SECONDS", "abc"),
    ("SWEEP_INTERVAL_SECONDS", "0"),
    ("SWEEP_BATCH", "0"),
    ("SWEEP_CONCURRENCY", "lots"),
    ("SWEEP_READ_TIMEOUT_SECONDS", "0"),
    ("DATABASE_URL", "mysql://x"),
    ("DATABASE_URL", "postgresql://u:p@h/db"),
    ("TELEGRAM_BOT_TOKEN", "not-a-token"),
    ("TELEGRAM_BOT_TOKEN", "123456:short"),
    ("WEBHOOK_PORT", "70000"),
    ("WEBHOOK_URL", "http://bot.example.com/hook"),
    ("WEBHOOK_URL", "ftp://bot.example.com/hook"),
    ("WEBHOOK_SECRET", "has space"),
    ("WEBHOOK_SECRET", "dot.not-allowed"),
    ("WEBHOOK_SECRET", "ünïcode"),
    ("WEBHOOK_SECRET", "trailing-newline\n"),
    ("WEBHOOK_SECRET", "x" * 257),
    ("SIM_TIMEOUT_RATE", "1.5"),
])
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                      value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message
    assert len(message) > len(name) + 2


def test_webhook_settings_within_telegrams_rules_are_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    longest = ("ABCXYZabcxyz0189_-" * 15)[:256]
    monkeypatch.setenv("WEBHOOK_URL", "https://bot.example.com:8443/hook")
    monkeypatch.setenv("WEBHOOK_SECRET", longest)
    telegram = load_settings(env_file=None).telegram
    assert str(telegram.webhook_url) == "https://bot.example.com:8443/hook"
    assert telegram.webhook_secret is not None
    assert telegram.webhook_secret.get_secret_value() == longest


def test_a_blank_webhook_secret_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    assert load_settings(env_file=None).telegram.webhook_secret is None


def test_bad_value_in_env_file_names_the_variable(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DEFAULT_CURRENCY=EUR\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"^DEFAULT_CURRENCY: must be USD or KHR$"):
        load_settings(env_file=env)


def test_valid_values_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", " warning ")
    monkeypatch.setenv("DEFAULT_CURRENCY", " khr")
    monkeypatch.setenv("DEFAULT_TIMEZONE", "UTC")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@h/db")
    settings = load_settings(env_file=None)
    assert settings.logging.log_level == "WARNING"
    assert settings.locale.default_currency == "KHR"
    assert settings.locale.default_timezone == "UTC"
    assert settings.storage.url == "postgresql+asyncpg://u:p@h/db"


def test_require_token_without_a_token() -> None:
    settings = load_settings(env_file=None)
    with pytest.raises(SettingsError) as caught:
        settings.telegram.require_token()
    assert str(caught.value).startswith("TELEGRAM_BOT_TOKEN")


def test_blank_token_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "   ")
    settings = load_settings(env_file=None)
    with pytest.raises(SettingsError, match="TELEGRAM_BOT_TOKEN"):
        settings.telegram.require_token()


def test_require_token_returns_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", f" {TOKEN} ")
    assert load_settings(env_file=None).telegram.require_token() == TOKEN


def test_masked_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [generate_fernet_key(), generate_fernet_key()]
    blind = "c2VjcmV0LWJsaW5kLWluZGV4LWtleS1vZi0zMi1ieXRlcyEhIQ=="
    webhook_secret = "hook-secret-value"
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ENCRYPTION_KEYS", ",".join(keys))
    monkeypatch.setenv("BLIND_INDEX_KEY", blind)
    monkeypatch.setenv("WEBHOOK_SECRET", webhook_secret)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:secretpw@h/db")
    shown = load_settings(env_file=None).masked()
    everything = "\n".join(f"{name}={value}" for name, value in shown.items())
    for secret in (TOKEN, TOKEN.split(":")[1], *keys, blind, webhook_secret, "secretpw"):
        assert secret not in everything
    assert shown["TELEGRAM_BOT_TOKEN"] == "***"
    assert shown["ENCRYPTION_KEYS"] == "***, ***"
    assert shown["BLIND_INDEX_KEY"] == "***"
    assert shown["WEBHOOK_SECRET"] == "***"
    assert shown["DATABASE_URL"] == "postgresql+asyncpg://u:***@h/db"


def test_masked_shows_plain_settings() -> None:
    shown = load_settings(env_file=None).masked()
    assert shown["TELEGRAM_BOT_TOKEN"] == "(not set)"
    assert shown["DEFAULT_TIMEZONE"] == "Asia/Phnom_Penh"
    assert shown["DEFAULT_CURRENCY"] == "USD"
    assert shown["LOG_LEVEL"] == "INFO"
    assert shown["DATABASE_URL"] == "sqlite+aiosqlite:///data/topup.db"
    assert set(_ALL_VARIABLES) <= set(shown)
