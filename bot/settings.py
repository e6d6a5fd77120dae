"""Every setting, in sections; the only module that reads the environment.

Each field's alias is its environment variable, so an error can name exactly what to fix.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.domain.money import CURRENCIES, Money

_TOKEN_SHAPE = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{20,}$")
# Telegram's rule for setWebhook's secret_token (sent back in X-Telegram-Bot-Api-Secret-Token).
_WEBHOOK_SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,256}")


class SettingsError(Exception):
    """One line for the operator: which setting is wrong and why."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True)


class TelegramSettings(_Section):
    bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    api_base_url: AnyHttpUrl = Field(AnyHttpUrl("https://api.telegram.org"),
                                     alias="TELEGRAM_API_BASE_URL")
    admin_chat_ids: Annotated[list[int], NoDecode] = Field(default_factory=list,
                                                           alias="ADMIN_CHAT_IDS")
    webhook_url: AnyHttpUrl | None = Field(None, alias="WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(None, alias="WEBHOOK_SECRET")
    webhook_listen: str = Field("127.0.0.1", alias="WEBHOOK_LISTEN")
    webhook_port: int = Field(8443, ge=1, le=65535, alias="WEBHOOK_PORT")

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        if value is not None and not _TOKEN_SHAPE.match(value.get_secret_value().strip()):
            raise ValueError("does not look like a bot token from @BotFather (123456:ABC...)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https_only(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and value.scheme != "https":
            raise ValueError("must be an https:// URL: Telegram delivers webhooks over HTTPS only")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not _WEBHOOK_SECRET_SHAPE.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1 to 256 characters, each A-Z, a-z, 0-9, _ or - "
                             "(Telegram's rule for a webhook secret token)")
        return value

    @field_validator("admin_chat_ids", mode="before")
    @classmethod
    def _admins(cls, value: Any) -> Any:
        return _split_csv(value)

    @property
    def api_root(self) -> str:
        return str(self.api_base_url).rstrip("/")

    @property
    def bot_base_url(self) -> str:
        """What PTB's base_url takes: it appends the token and the method."""
        return f"{self.api_root}/bot"

    @property
    def file_base_url(self) -> str:
        return f"{self.api_root}/file/bot"

    def require_token(self) -> str:
        if self.bot_token is None:
            raise SettingsError("TELEGRAM_BOT_TOKEN is not set: put the token @BotFather gave "
                                "you in .env as TELEGRAM_BOT_TOKEN=123456:ABC...")
        return self.bot_token.get_secret_value().strip()


class StorageSettings(_Section):
    data_dir: Path = Field(Path("data"), alias="DATA_DIR")
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return SecretStr(url)

    @property
    def url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'topup.db').as_posix()}"


class SecuritySettings(_Section):
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="ENCRYPTION_KEYS")
    blind_index_key: SecretStr | None = Field(None, alias="BLIND_INDEX_KEY")

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        return _split_csv(value)


class LocaleSettings(_Section):
    default_timezone: str = Field("Asia/Phnom_Penh", alias="DEFAULT_TIMEZONE")
    default_currency: str = Field("USD", alias="DEFAULT_CURRENCY")

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone such as Asia/Phnom_Penh") from exc
        return value

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in CURRENCIES or value == "XTR":
            raise ValueError("must be USD or KHR")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.default_timezone)


class GatewaySettings(_Section):
    carrier_backend: Literal["simulated", "reloadly", "dingconnect"] = Field(
        "simulated", alias="CARRIER_BACKEND")
    esim_backend: Literal["simulated", "airalo"] = Field("simulated", alias="ESIM_BACKEND")
    sms_backend: Literal["console"] = Field("console", alias="SMS_BACKEND")
    sim_latency_ms: int = Field(0, ge=0, le=60_000, alias="SIM_LATENCY_MS")
    sim_timeout_rate: float = Field(0.0, ge=0, le=1, alias="SIM_TIMEOUT_RATE")
    sim_decline_rate: float = Field(0.0, ge=0, le=1, alias="SIM_DECLINE_RATE")
    sim_pending_rate: float = Field(0.0, ge=0, le=1, alias="SIM_PENDING_RATE")
    sim_settle_seconds: int = Field(30, ge=0, le=86_400, alias="SIM_SETTLE_SECONDS")


class ProviderSettings(_Section):
    """The real top-up and eSIM providers; only the credentials of the chosen CARRIER_BACKEND
    and ESIM_BACKEND are needed."""

    reloadly_client_id: str | None = Field(None, alias="RELOADLY_CLIENT_ID")
    reloadly_client_secret: SecretStr | None = Field(None, alias="RELOADLY_CLIENT_SECRET")
    reloadly_sandbox: bool = Field(True, alias="RELOADLY_SANDBOX")
    reloadly_auth_url: AnyHttpUrl | None = Field(None, alias="RELOADLY_AUTH_URL")
    reloadly_api_url: AnyHttpUrl | None = Field(None, alias="RELOADLY_API_URL")
    dingconnect_api_key: SecretStr | None = Field(None, alias="DINGCONNECT_API_KEY")
    dingconnect_api_url: AnyHttpUrl | None = Field(None, alias="DINGCONNECT_API_URL")
    airalo_client_id: str | None = Field(None, alias="AIRALO_CLIENT_ID")
    airalo_client_secret: SecretStr | None = Field(None, alias="AIRALO_CLIENT_SECRET")
    airalo_api_url: AnyHttpUrl | None = Field(None, alias="AIRALO_API_URL")
    # Below this balance at the provider the admins are told (once per episode).
    float_alert_usd: Decimal = Field(Decimal(50), ge=0, le=1_000_000, decimal_places=2,
                                     alias="PROVIDER_FLOAT_ALERT")
    catalog_ttl_minutes: int = Field(60, ge=1, le=24 * 60, alias="PROVIDER_CATALOG_TTL_MINUTES")

    @field_validator("reloadly_client_id", "reloadly_client_secret", "dingconnect_api_key",
                     "reloadly_auth_url", "reloadly_api_url", "dingconnect_api_url",
                     "airalo_client_id", "airalo_client_secret", "airalo_api_url",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def float_alert(self) -> Money:
        return Money.from_decimal(self.float_alert_usd, "USD")

    def missing_for(self, backend: str) -> str | None:
        """The first credential ``backend`` needs that is not set."""
        needed = {"reloadly": (("RELOADLY_CLIENT_ID", self.reloadly_client_id),
                               ("RELOADLY_CLIENT_SECRET", self.reloadly_client_secret)),
                  "dingconnect": (("DINGCONNECT_API_KEY", self.dingconnect_api_key),),
                  "airalo": (("AIRALO_CLIENT_ID", self.airalo_client_id),
                             ("AIRALO_CLIENT_SECRET", self.airalo_client_secret))}
        for name, value in needed.get(backend, ()):
            if value is None:
                return name
        return None


class PaymentsSettings(_Section):
    provider_token: SecretStr | None = Field(None, alias="PAYMENTS_PROVIDER_TOKEN")
    provider_currency: str = Field("USD", alias="PAYMENTS_CURRENCY")
    stars_per_usd: int = Field(50, ge=1, le=10_000, alias="STARS_PER_USD")
    approval_timeout_minutes: int = Field(60, ge=1, le=7 * 24 * 60,
                                          alias="APPROVAL_TIMEOUT_MINUTES")

    @field_validator("provider_token")
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("provider_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in CURRENCIES or value == "XTR":
            raise ValueError("must be USD or KHR (Telegram Stars are used without a token)")
        return value

    @property
    def uses_stars(self) -> bool:
        """Telegram Stars (XTR) when no payment provider token is configured."""
        return self.provider_token is None


_BAKONG_ACCOUNT = re.compile(r"[A-Za-z0-9._-]{1,24}@[A-Za-z0-9_-]{1,16}")
_KHQR_TEXT = re.compile(r"[ -~]+")  # printable ASCII: bank apps show tags 59 and 60 as-is


def _khqr_text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _KHQR_TEXT.fullmatch(value) or len(value) > limit:
        raise ValueError(f"must be 1 to {limit} plain Latin letters, digits or punctuation "
                         "(it is printed into the QR as-is)")
    return value


class BakongSettings(_Section):
    """Bakong KHQR: wallet funding by the QR every Cambodian bank app pays. On when
    BAKONG_ACCOUNT_ID is set; the token is the Bakong Open API's developer token."""

    token: SecretStr | None = Field(None, alias="BAKONG_TOKEN")
    account_id: str | None = Field(None, alias="BAKONG_ACCOUNT_ID")
    merchant_name: str | None = Field(None, alias="BAKONG_MERCHANT_NAME")
    merchant_city: str = Field("Phnom Penh", alias="BAKONG_MERCHANT_CITY")
    # A merchant account's (tag 30) ids; an individual account (tag 29) needs neither.
    merchant_id: str | None = Field(None, alias="BAKONG_MERCHANT_ID")
    acquiring_bank: str | None = Field(None, alias="BAKONG_ACQUIRING_BANK")
    api_url: AnyHttpUrl = Field(AnyHttpUrl("https://api-bakong.nbc.gov.kh"),
                                alias="BAKONG_API_URL")
    currency: Literal["USD", "KHR"] = Field("USD", alias="KHQR_CURRENCY")
    khr_per_usd: int = Field(4_100, ge=1_000, le=10_000, alias="KHR_PER_USD")
    expiry_minutes: int = Field(15, ge=2, le=24 * 60, alias="KHQR_EXPIRY_MINUTES")
    # Polling goes on this long after expiry: a payment made at the last second lands late.
    grace_minutes: int = Field(30, ge=0, le=24 * 60, alias="KHQR_GRACE_MINUTES")
    poll_seconds: int = Field(5, ge=1, le=600, alias="KHQR_POLL_SECONDS")

    @field_validator("token", "account_id", "merchant_name", "merchant_id", "acquiring_bank",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("currency", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not _BAKONG_ACCOUNT.fullmatch(value):
            raise ValueError("must be a Bakong account id such as yourname@aclb")
        return value

    @field_validator("merchant_name", "merchant_id", "acquiring_bank")
    @classmethod
    def _khqr_text(cls, value: str | None) -> str | None:
        return _khqr_text(value, 25)

    @field_validator("merchant_city")
    @classmethod
    def _khqr_city(cls, value: str) -> str:
        return _khqr_text(value, 15) or "Phnom Penh"

    @property
    def enabled(self) -> bool:
        return self.account_id is not None

    @property
    def api_root(self) -> str:
        return str(self.api_url).rstrip("/")

    def missing(self) -> str | None:
        """The first setting KHQR needs, once BAKONG_ACCOUNT_ID turns it on, that is unset."""
        if not self.enabled:
            return None
        if self.token is None:
            return "BAKONG_TOKEN"
        if self.merchant_name is None:
            return "BAKONG_MERCHANT_NAME"
        if (self.merchant_id is None) != (self.acquiring_bank is None):
            return "BAKONG_ACQUIRING_BANK" if self.acquiring_bank is None \
                else "BAKONG_MERCHANT_ID"
        return None


class SchedulerSettings(_Section):
    sweep_interval_seconds: int = Field(60, ge=1, le=86_400, alias="SWEEP_INTERVAL_SECONDS")
    sweep_batch: int = Field(500, ge=1, le=10_000, alias="SWEEP_BATCH")
    sweep_concurrency: int = Field(128, ge=1, le=1_000, alias="SWEEP_CONCURRENCY")
    read_timeout_seconds: float = Field(10.0, gt=0, le=300, alias="SWEEP_READ_TIMEOUT_SECONDS")


class LoggingSettings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def level(self) -> int:
        return int(logging.getLevelName(self.log_level))


class Settings(BaseModel):
    telegram: TelegramSettings
    storage: StorageSettings
    security: SecuritySettings
    locale: LocaleSettings
    gateways: GatewaySettings
    providers: ProviderSettings
    payments: PaymentsSettings
    bakong: BakongSettings
    scheduler: SchedulerSettings
    logging: LoggingSettings

    def masked(self) -> dict[str, str]:
        """Every effective setting by its environment name, secrets shown as ***."""
        shown: dict[str, str] = {}
        for section in (self.telegram, self.storage, self.security, self.locale,
                        self.gateways, self.providers, self.payments, self.bakong,
                        self.scheduler, self.logging):
            for name, field in type(section).model_fields.items():
                value = getattr(section, name)
                shown[field.alias or name] = _mask(value)
        shown["TELEGRAM_API_BASE_URL"] = self.telegram.api_root
        shown["DATABASE_URL"] = _mask_url(self.storage.url)
        return shown


def _mask(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else "(not set)"
    if isinstance(value, list):
        return ", ".join(_mask(item) for item in value) or "(not set)"
    return str(value)


def _mask_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


_SECTIONS: dict[str, type[_Section]] = {
    "telegram": TelegramSettings, "storage": StorageSettings, "security": SecuritySettings,
    "locale": LocaleSettings, "gateways": GatewaySettings, "providers": ProviderSettings,
    "payments": PaymentsSettings, "bakong": BakongSettings,
    "scheduler": SchedulerSettings,
    "logging": LoggingSettings,
}


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read the environment (and ``env_file``); raise SettingsError naming the bad setting."""
    sections: dict[str, Any] = {}
    for key, section in _SECTIONS.items():
        try:
            sections[key] = section(_env_file=env_file)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else key
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"{name}: {message}") from None
    settings = Settings(**sections)
    for name, backend in (("CARRIER_BACKEND", settings.gateways.carrier_backend),
                          ("ESIM_BACKEND", settings.gateways.esim_backend)):
        missing = settings.providers.missing_for(backend)
        if missing is not None:
            raise SettingsError(f"{missing}: needed when {name}={backend}")
    missing = settings.bakong.missing()
    if missing is not None:
        raise SettingsError(f"{missing}: needed when BAKONG_ACCOUNT_ID is set")
    return settings
