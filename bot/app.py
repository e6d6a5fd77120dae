"""Builds the python-telegram-bot Application: handlers, rate limiter, defaults, start-up."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import warnings

from telegram import Bot, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    Defaults,
)
from telegram.request import BaseRequest
from telegram.warnings import PTBUserWarning

from bot.jobs import (
    schedule_broadcast_reports,
    schedule_code_purge,
    schedule_khqr_polling,
    schedule_monthly_summaries,
    schedule_pollers,
    schedule_provider_jobs,
)
from bot.services.notifications import NotificationDispatcher
from bot.startup import check_start_up
from bot.update_processor import PerChatUpdateProcessor
from bot.wiring import Components
from handlers.alerts import AlertsFlow
from handlers.approvals import ApprovalsFlow
from handlers.autorecharge import AutoRechargeFlow
from handlers.balance import BalanceFlow
from handlers.binding import BindingFlow
from handlers.broadcast import ADMIN_BUTTONS as BROADCAST_ADMIN_BUTTONS
from handlers.broadcast import ADMIN_COMMANDS as BROADCAST_ADMIN_COMMANDS
from handlers.broadcast import BroadcastFlow
from handlers.charts import ChartsFlow
from handlers.chat_gate import GATE_GROUP, ChatGate
from handlers.errors import ErrorHandler
from handlers.esim import EsimFlow
from handlers.history import HistoryFlow
from handlers.khqr import KhqrFlow
from handlers.lines import LinesFlow
from handlers.lockout import LockoutNotice
from handlers.outbox import TelegramDeliverer
from handlers.privacy import PrivacyFlow
from handlers.settings import SettingsFlow
from handlers.start import StartHandlers, command_menu
from handlers.support import ADMIN_COMMANDS as SUPPORT_ADMIN_COMMANDS
from handlers.support import SupportFlow
from handlers.wallet import ADMIN_COMMANDS, PAYMENT_GROUP, WalletFlow
from storage import migrate
from storage.persistence import DatabasePersistence

log = logging.getLogger(__name__)

# Telegram allows "about 30 messages a second"; sending at exactly 30 lets network jitter
# bunch requests over the limit (429s), one under leaves the server's bucket some slack.
OVERALL_MESSAGES_PER_SECOND = 29


def build_application(components: Components,
                      request: BaseRequest | None = None) -> Application:  # type: ignore[type-arg]
    """The Application; ``request`` replaces the HTTP layer (flow tests record calls)."""
    settings = components.settings
    root = settings.telegram.api_root

    async def post_init(app: Application) -> None:  # type: ignore[type-arg]
        await _set_commands(app, components)
        # Charges a crash left half-way are looked up by reference (never re-sent blind);
        # unsent messages go out with the dispatcher's first run.
        await components.catalog.warm()  # plans are looked up inside transactions
        await components.charging.reconcile_on_start()
        log.info("Running as @%s against %s; database schema %s", app.bot.username, root,
                 await migrate.current_revision(components.db))
        freeze_start_up_objects()

    async def post_shutdown(app: Application) -> None:  # type: ignore[type-arg]
        await components.aclose()

    app = (
        _builder(components, request)
        .concurrent_updates(PerChatUpdateProcessor())
        .persistence(DatabasePersistence(components.db, components.cipher))
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    # Our conversations key on chat and user, and callback buttons are re-checked against the
    # database, so PTB's advice to track them per message does not apply.
    warnings.filterwarnings("ignore", message="If 'per_message=False'", category=PTBUserWarning)
    users, i18n = components.users, components.i18n
    # Private chats and new messages only, before anything else sees the update.
    app.add_handlers(ChatGate(users, i18n, settings.telegram.admin_chat_ids,
                              (*ADMIN_COMMANDS, *SUPPORT_ADMIN_COMMANDS,
                               *BROADCAST_ADMIN_COMMANDS),
                              admin_buttons=BROADCAST_ADMIN_BUTTONS).handlers(),
                     group=GATE_GROUP)
    start = StartHandlers(components.users, components.i18n, components.lines,
                          components.wallet)
    app.add_handlers(start.handlers())
    wallet = WalletFlow(users, i18n, components.wallet, settings.telegram.admin_chat_ids,
                        khqr_enabled=components.khqr is not None)
    # Payments and approval buttons are answered ahead of any conversation in progress.
    app.add_handlers(wallet.payment_handlers(), group=PAYMENT_GROUP)
    app.add_handlers(ApprovalsFlow(users, i18n, components.charging).handlers(),
                     group=PAYMENT_GROUP)
    esims = EsimFlow(users, i18n, components.esims)
    app.add_handlers(esims.button_handlers(), group=PAYMENT_GROUP)
    app.add_handlers(ChartsFlow(users, i18n, components.charts).button_handlers(),
                     group=PAYMENT_GROUP)
    if components.khqr is not None:
        app.add_handlers(KhqrFlow(users, i18n, components.khqr).button_handlers(),
                         group=PAYMENT_GROUP)
    support = SupportFlow(users, i18n, components.support, settings.telegram.admin_chat_ids)
    # An admin's answer to a support request, ahead of any conversation of theirs.
    app.add_handlers(support.reply_handlers(), group=PAYMENT_GROUP)
    broadcast = BroadcastFlow(users, i18n, components.promotions,
                              settings.telegram.admin_chat_ids)
    app.add_handlers(broadcast.button_handlers(), group=PAYMENT_GROUP)
    # /privacy and /forget, ahead of any conversation (a confirmed forget ends them).
    app.add_handlers(PrivacyFlow(users, i18n, components.privacy).handlers(),
                     group=PAYMENT_GROUP)
    app.add_handlers(wallet.handlers())
    app.add_handlers(broadcast.handlers())
    app.add_handlers(esims.handlers())
    app.add_handlers(BindingFlow(users, i18n, components.binding).handlers())
    app.add_handlers(LinesFlow(users, i18n, components.lines).handlers())
    app.add_handlers(BalanceFlow(users, i18n, components.lines, components.readings).handlers())
    app.add_handlers(SettingsFlow(users, i18n, components.lines, components.readings,
                                  components.promotions).handlers())
    app.add_handlers(AutoRechargeFlow(users, i18n, components.lines,
                                      components.rules).handlers())
    app.add_handlers(AlertsFlow(users, i18n, components.lines, components.rules).handlers())
    app.add_handlers(support.handlers())
    history = HistoryFlow(users, i18n, components.history)
    app.add_handlers(history.button_handlers(), group=PAYMENT_GROUP)
    app.add_handlers(history.handlers())
    # Last in group 0: only what no handler above claimed reaches these. A code typed
    # after a lockout ended its flow is answered with the lockout, any other with "I did
    # not understand that".
    app.add_handlers(LockoutNotice(users, i18n, components.otp, otherwise=start.stray)
                     .handlers())
    app.add_handlers(start.last_resort())
    app.add_error_handler(ErrorHandler(users, i18n).on_error)
    _schedule_work(app, components)
    return app


def _builder(components: Components, request: BaseRequest | None = None,
             ) -> ApplicationBuilder:  # type: ignore[type-arg]
    """What the bot and a worker share: the Bot API, defaults and the rate limiter."""
    settings = components.settings
    builder = ApplicationBuilder()
    if request is not None:
        builder = builder.request(request).get_updates_request(request)
    return (
        builder
        .token(settings.telegram.require_token())
        .base_url(settings.telegram.bot_base_url)
        .base_file_url(settings.telegram.file_base_url)
        .defaults(Defaults(tzinfo=settings.locale.zone))
        .rate_limiter(AIORateLimiter(overall_max_rate=OVERALL_MESSAGES_PER_SECOND,
                                     max_retries=3))
    )


def _schedule_work(app: Application, components: Components) -> None:  # type: ignore[type-arg]
    """The pollers: charges, balance sweeps, calendar rules, the notifications dispatcher."""
    if app.job_queue is None:
        return
    dispatcher = NotificationDispatcher(
        components.db, components.clock,
        TelegramDeliverer(app.bot, components.users, components.i18n, components.esims,
                          components.support))
    schedule_pollers(app.job_queue, components.charging, dispatcher, components.scheduler,
                     sweep_seconds=components.settings.scheduler.sweep_interval_seconds)
    schedule_provider_jobs(app.job_queue, components.provider_float,
                           components.reconciliations)
    schedule_monthly_summaries(app.job_queue, components.history)
    schedule_broadcast_reports(app.job_queue, components.promotions)
    schedule_code_purge(app.job_queue, components.otp)
    if components.khqr is not None:
        schedule_khqr_polling(app.job_queue, components.khqr,
                              seconds=components.settings.bakong.poll_seconds)


def build_worker(components: Components,
                 request: BaseRequest | None = None) -> Application:  # type: ignore[type-arg]
    """An Application without the Telegram front: no updates, no handlers, only the
    pollers; it sends what the outbox holds through the same rate limiter."""
    async def post_shutdown(app: Application) -> None:  # type: ignore[type-arg]
        await components.aclose()

    app = _builder(components, request).updater(None).post_shutdown(post_shutdown).build()
    _schedule_work(app, components)
    return app


def run_worker(components: Components) -> None:
    """`topup-bot worker`: the start-up checks and the migration (``prepare_database``), then
    sweeps and sends until SIGTERM or SIGINT (several may run against one PostgreSQL
    database; leases keep them from doing anything twice)."""
    app = build_worker(components)

    async def serve() -> None:
        await prepare_database(components, app.bot)  # getMe here: initialize() skips it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await app.initialize()
        await components.charging.reconcile_on_start()
        freeze_start_up_objects()
        await app.start()
        log.info("Worker %s running: sweeps and notifications, no Telegram front",
                 components.worker)
        await stop.wait()
        log.info("Worker %s stopping", components.worker)
        await app.stop()
        await app.shutdown()

    asyncio.run(serve())


def freeze_start_up_objects() -> None:
    """Moves everything alive after start-up out of the garbage collector's sight.

    The modules, handlers, catalogs and caches loaded at start-up live as long as the
    process; without this every full collection walks them all again, which held the event
    loop ~40-80 ms at a time under load (bench/flows.py, DESIGN-NOTES "Throughput").
    """
    gc.collect()
    gc.freeze()


async def _set_commands(app: Application, components: Components) -> None:  # type: ignore[type-arg]
    # A self-hosted or emulated Bot API server may not know setMyCommands: not fatal.
    try:
        await app.bot.set_my_commands(command_menu(components.i18n.gettext("en")))
        for language, telegram_code in (("km", "km"), ("zh_Hans", "zh")):
            await app.bot.set_my_commands(command_menu(components.i18n.gettext(language)),
                                          language_code=telegram_code)
    except TelegramError as exc:
        log.warning("setMyCommands failed (%s); the command menu is not set", exc)


async def prepare_database(components: Components, bot: Bot | None = None) -> None:
    """Start-up: the checks `check-config` makes (bot/startup.py: the database reachable, its
    schema known, and with ``bot`` the token accepted by getMe), then the migration. Schema
    first: persistence reads its tables before any handler runs. A failed check raises
    ``StartupFailure`` before anything is changed."""
    try:
        await check_start_up(components.settings, components.db, bot)
        await migrate.upgrade(components.db, cipher=components.cipher)
    finally:
        await components.db.dispose()  # the running bot opens its connections afresh


def run(components: Components) -> None:
    """The start-up checks and the migration, then runs until interrupted: webhook mode when
    WEBHOOK_URL is set, polling otherwise."""
    app = build_application(components)
    # The checks run on the loop PTB then runs the bot on (run_polling takes the current
    # one): the Bot they initialized with getMe is ready, and initialize() does not ask again.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(prepare_database(components, app.bot))
    except BaseException:
        loop.close()
        asyncio.set_event_loop(None)
        raise
    telegram = components.settings.telegram
    if telegram.webhook_url is not None:
        secret = (telegram.webhook_secret.get_secret_value() if telegram.webhook_secret
                  else secrets.token_urlsafe(32))
        app.run_webhook(listen=telegram.webhook_listen, port=telegram.webhook_port,
                        webhook_url=str(telegram.webhook_url), secret_token=secret,
                        allowed_updates=Update.ALL_TYPES)
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES)
