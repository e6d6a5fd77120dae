"""The composition root: settings in, every collaborator built and connected once.

Nothing here runs at import time; ``build_components`` is called by the CLI (and tests).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import timedelta

from bot.clock import Clock, SystemClock
from bot.domain.lines import LineKind
from bot.gateways.airalo import AiraloConfig, AiraloGateway
from bot.gateways.bakong import BakongGateway, KhqrChecks
from bot.gateways.dingconnect import DingConfig, DingConnectGateway
from bot.gateways.esim import EsimProvider
from bot.gateways.esim_charges import EsimCharges
from bot.gateways.esim_readings import EsimLineReadings
from bot.gateways.readings import LineReadings, NoLineReadings
from bot.gateways.reloadly import ReloadlyConfig, ReloadlyGateway
from bot.gateways.simulated_carrier import SimulatedCarrier, SimulatorKnobs
from bot.gateways.simulated_esim import SimulatedEsimProvider
from bot.gateways.sms import ConsoleSms, SmsSender
from bot.gateways.topup import ProviderAccount, TopUpBackend
from bot.i18n import Translations
from bot.services.binding import BindingService
from bot.services.catalog import CatalogService
from bot.services.charging import ChargingService
from bot.services.charts import ChartsService
from bot.services.esims import EsimService
from bot.services.history import HistoryService
from bot.services.keys import KeyRotationService
from bot.services.khqr import KhqrService
from bot.services.lines import LinesService
from bot.services.otp import OtpService
from bot.services.privacy import PrivacyService
from bot.services.promotions import PromotionsService
from bot.services.provider_float import ProviderFloatService
from bot.services.readings import ReadingsService
from bot.services.reconciliation import ReconciliationService
from bot.services.rules import RulesService
from bot.services.scheduler import SchedulerService, SweepSettings
from bot.services.support import SupportService
from bot.services.users import UsersService
from bot.services.wallet import WalletService
from bot.settings import Settings
from bot.startup import load_cipher, prepare_data_dir
from storage.crypto import FieldCipher
from storage.db import Database

# How a reading names the eSIM provider it came from ("read from Airalo 3 minutes ago").
ESIM_PROVIDER_NAMES = {"airalo": "Airalo", "simulated": "Simulated eSIM"}


@dataclass
class Components:
    settings: Settings
    clock: Clock
    db: Database
    cipher: FieldCipher
    simulator: SimulatedCarrier  # the embedded carrier (CARRIER_BACKEND=simulated; `sim`)
    provider: TopUpBackend  # who tops lines up: the simulator, Reloadly or DingConnect
    line_readings: LineReadings  # who can read a line's balance: the simulator, or nobody
    esim_provider: EsimProvider  # who sells eSIMs and reads them: the simulator or Airalo
    sms: SmsSender
    i18n: Translations
    # Who says whether a KHQR was paid (Bakong); None: KHQR is off (no BAKONG_ACCOUNT_ID).
    khqr_checks: KhqrChecks | None = None
    users: UsersService = field(init=False)
    catalog: CatalogService = field(init=False)
    keys: KeyRotationService = field(init=False)
    otp: OtpService = field(init=False)
    binding: BindingService = field(init=False)
    lines: LinesService = field(init=False)
    charts: ChartsService = field(init=False)
    readings: ReadingsService = field(init=False)
    rules: RulesService = field(init=False)
    wallet: WalletService = field(init=False)
    history: HistoryService = field(init=False)
    khqr: KhqrService | None = field(init=False)
    support: SupportService = field(init=False)
    promotions: PromotionsService = field(init=False)
    privacy: PrivacyService = field(init=False)
    charging: ChargingService = field(init=False)
    esims: EsimService = field(init=False)
    esim_charges: EsimCharges = field(init=False)  # eSIM lines' charges at the eSIM provider
    scheduler: SchedulerService = field(init=False)
    reconciliations: tuple[ReconciliationService, ...] = field(init=False)
    provider_float: ProviderFloatService | None = field(init=False)  # real providers only
    worker: str = "bot"  # names this process's sweeps in `topup-bot status`

    def _provider_services(self) -> None:
        backend = self.settings.gateways.carrier_backend
        provider = self.provider
        zone = self.settings.locale.zone
        # The top-up provider with SIM lines' charges, the eSIM provider with eSIM lines'.
        self.reconciliations = (
            ReconciliationService(self.db, self.cipher, provider, self.clock,
                                  backend=backend, zone=zone),
            ReconciliationService(self.db, self.cipher, self.esim_charges, self.clock,
                                  backend=f"esim:{self.settings.gateways.esim_backend}",
                                  zone=zone, lines_of=LineKind.ESIM))
        self.provider_float = None
        if backend != "simulated" and isinstance(provider, ProviderAccount):
            self.provider_float = ProviderFloatService(
                self.db, provider, self.clock, backend=backend,
                threshold=self.settings.providers.float_alert,
                admin_chat_ids=self.settings.telegram.admin_chat_ids)

    async def aclose(self) -> None:
        """What shutting down releases: the provider's HTTP connections, the database."""
        for client in (self.provider, self.esim_provider, self.khqr_checks):
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()
        await self.db.dispose()

    @property
    def esim_provider_name(self) -> str:
        return ESIM_PROVIDER_NAMES[self.settings.gateways.esim_backend]

    def __post_init__(self) -> None:
        self.users = UsersService(self.db, self.clock, self.settings.locale.zone)
        self.keys = KeyRotationService(self.db, self.cipher, self.clock)
        self.otp = OtpService(self.db, self.cipher, self.sms, self.clock)
        self.binding = BindingService(self.db, self.cipher, self.otp, self.clock)
        # One catalog of plans for every service, read from the provider and cached.
        self.esim_charges = EsimCharges(self.esim_provider, self.clock)
        self.catalog = CatalogService(
            self.provider, self.clock,
            ttl=timedelta(minutes=self.settings.providers.catalog_ttl_minutes),
            esims=self.esim_provider)
        self.lines = LinesService(self.db, self.cipher, self.catalog, self.clock,
                                  esims=self.esim_provider,
                                  esim_provider_name=self.esim_provider_name)
        self.readings = ReadingsService(self.db, self.cipher, self.clock)
        self.charts = ChartsService(self.db, self.cipher, self.clock,
                                    esim_provider_name=self.esim_provider_name)
        self.rules = RulesService(self.db, self.cipher, self.otp, self.clock,
                                  zone_for=self.users.zone_of, catalog=self.catalog)
        payments = self.settings.payments
        # Airtime is sold in US dollars, so the wallet that pays for it is kept in them.
        self.wallet = WalletService(self.db, self.clock, payments, self.cipher,
                                    admin_chat_ids=self.settings.telegram.admin_chat_ids)
        self.history = HistoryService(self.db, self.cipher, self.clock,
                                      zone_for=self.users.zone_of,
                                      default_zone=self.settings.locale.zone,
                                      currency=self.wallet.currency)
        self.khqr = None
        if self.khqr_checks is not None and self.settings.bakong.enabled:
            self.khqr = KhqrService(self.db, self.clock, self.settings.bakong, self.cipher,
                                    self.khqr_checks, wallet_currency=self.wallet.currency,
                                    admin_chat_ids=self.settings.telegram.admin_chat_ids)
        self.support = SupportService(self.db, self.cipher, self.clock,
                                      admin_chat_ids=self.settings.telegram.admin_chat_ids,
                                      wallet_currency=self.wallet.currency)
        self.promotions = PromotionsService(self.db, self.clock,
                                            default_zone=self.settings.locale.zone)
        self.privacy = PrivacyService(self.db, self.cipher, self.clock, self.users,
                                      khqr_grace_minutes=self.settings.bakong.grace_minutes)
        self.charging = ChargingService(
            self.db, self.cipher, self.provider, self.clock,
            approval_timeout=timedelta(minutes=payments.approval_timeout_minutes),
            admin_chat_ids=self.settings.telegram.admin_chat_ids, zone_for=self.users.zone_of,
            catalog=self.catalog, esims=self.esim_charges)
        self.esims = EsimService(self.db, self.cipher, self.catalog, self.esim_provider,
                                 self.charging, self.clock)
        scheduler = self.settings.scheduler
        self.scheduler = SchedulerService(
            self.db, self.cipher, self.line_readings, self.charging, self.clock,
            default_zone=self.settings.locale.zone,
            settings=SweepSettings(
                batch=scheduler.sweep_batch, concurrency=scheduler.sweep_concurrency,
                read_timeout=timedelta(seconds=scheduler.read_timeout_seconds),
                worker=self.worker),
            esims=EsimLineReadings(self.esim_provider, self.esim_provider_name))
        self._provider_services()


def build_components(settings: Settings, *, clock: Clock | None = None,
                     rng: random.Random | None = None,
                     sms: SmsSender | None = None, worker: str = "bot") -> Components:
    """Every collaborator; start-up checks 2 and 3 (DATA_DIR usable, keys load) come first
    and raise ``StartupFailure`` (see bot/startup.py)."""
    prepare_data_dir(settings)
    cipher = load_cipher(settings)
    clock = clock or SystemClock()
    db = Database(settings.storage.url)
    gateways = settings.gateways
    knobs = SimulatorKnobs(
        latency_ms=gateways.sim_latency_ms, timeout_rate=gateways.sim_timeout_rate,
        decline_rate=gateways.sim_decline_rate, pending_rate=gateways.sim_pending_rate,
        settle_seconds=gateways.sim_settle_seconds)
    simulator = SimulatedCarrier(db, cipher, clock, knobs, rng)
    provider, line_readings = build_provider(settings, simulator, clock)
    return Components(settings=settings, clock=clock, db=db, cipher=cipher,
                      simulator=simulator, provider=provider, line_readings=line_readings,
                      esim_provider=build_esim_provider(settings, db, cipher, clock),
                      sms=sms or ConsoleSms(), i18n=Translations(),
                      khqr_checks=build_khqr_checks(settings), worker=worker)


def build_provider(settings: Settings, simulator: SimulatedCarrier,
                   clock: Clock) -> tuple[TopUpBackend, LineReadings]:
    """The top-up backend CARRIER_BACKEND names, and who can read lines with it. Builds
    clients only: nothing is called until a top-up is asked for."""
    chosen = settings.providers
    ttl = timedelta(minutes=chosen.catalog_ttl_minutes)
    backend = settings.gateways.carrier_backend
    if backend == "reloadly":
        secret = chosen.reloadly_client_secret
        return ReloadlyGateway(ReloadlyConfig(
            client_id=chosen.reloadly_client_id or "",
            client_secret=secret.get_secret_value() if secret else "",
            sandbox=chosen.reloadly_sandbox,
            auth_url=str(chosen.reloadly_auth_url) if chosen.reloadly_auth_url else None,
            api_url=str(chosen.reloadly_api_url) if chosen.reloadly_api_url else None,
            catalog_ttl=ttl), clock), NoLineReadings()
    if backend == "dingconnect":
        key = chosen.dingconnect_api_key
        return DingConnectGateway(DingConfig(
            api_key=key.get_secret_value() if key else "",
            api_url=str(chosen.dingconnect_api_url) if chosen.dingconnect_api_url else None,
            catalog_ttl=ttl), clock), NoLineReadings()
    return simulator, simulator


def build_khqr_checks(settings: Settings) -> KhqrChecks | None:
    """Bakong's client when KHQR is on (BAKONG_ACCOUNT_ID set; settings ensure a token)."""
    bakong = settings.bakong
    if not bakong.enabled or bakong.token is None:
        return None
    return BakongGateway(bakong.api_root, bakong.token.get_secret_value())


def build_esim_provider(settings: Settings, db: Database, cipher: FieldCipher,
                        clock: Clock) -> EsimProvider:
    """The eSIM provider ESIM_BACKEND names (a client only: nothing is called yet)."""
    chosen = settings.providers
    if settings.gateways.esim_backend == "airalo":
        secret = chosen.airalo_client_secret
        config = AiraloConfig(
            client_id=chosen.airalo_client_id or "",
            client_secret=secret.get_secret_value() if secret else "",
            catalog_ttl=timedelta(minutes=chosen.catalog_ttl_minutes))
        if chosen.airalo_api_url:
            config = dataclasses.replace(config, api_url=str(chosen.airalo_api_url))
        return AiraloGateway(config, clock)
    return SimulatedEsimProvider(db, cipher, clock)
