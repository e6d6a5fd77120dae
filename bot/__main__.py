"""The `topup-bot` command line: run the bot, migrate, check settings, rotate keys, sim."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from bot.cli_broadcast import (
    BroadcastCliError,
    NotSent,
    broadcast,
    broadcast_status,
    parse_broadcast_id,
    parse_offer,
)
from bot.cli_charges import STATES, list_charges
from bot.cli_providers import ProviderCheckFailed, format_reconciliation, providers_check
from bot.cli_status import scheduler_status
from bot.cli_wallet import WalletCliError, wallet_credit
from bot.domain.money import Money, MoneyError, parse_money
from bot.domain.numbers import whole_number
from bot.domain.phone import MobileNumber, PhoneError, describe_phone_error, parse_cambodian_mobile
from bot.gateways.simulated_carrier import SimLineState
from bot.gateways.topup import GatewayError
from bot.settings import Settings, SettingsError, load_settings
from bot.startup import (
    EXIT_BAD_SETTING,
    StartupFailure,
    StartupReport,
    check_database,
    check_start_up,
)
from bot.wiring import Components, build_components
from storage import migrate
from storage.crypto import KeyConfigError, generate_fernet_key

# 0 done; 1 failed otherwise (interrupted, or an unexpected error with its traceback);
# 2 a bad setting or bad input; 3 something the settings name cannot be reached
# (bot.startup.EXIT_UNREACHABLE, carried by its StartupFailure).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, EXIT_BAD_SETTING


class CliError(Exception):
    """Bad input or configuration: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="topup-bot",
        description="Telegram bot that keeps Cambodian prepaid and eSIM lines topped up.",
        epilog="Settings come from the environment and .env; see .env.example.")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("run", help="migrate the database and run the bot (polling, or "
                                    "webhook when WEBHOOK_URL is set)")
    worker = commands.add_parser(
        "worker", help="run the sweeps and the notifications dispatcher without the Telegram "
                       "front (several may share one PostgreSQL database)")
    worker.add_argument("--name", default=None,
                        help="this worker's name in `topup-bot status` (default: host-pid)")
    commands.add_parser("status", help="the scheduler: what is due, the lag, the last sweeps "
                                       "and failures by kind")
    commands.add_parser("migrate", help="upgrade the database schema to this version")
    check = commands.add_parser(
        "check-config", help="make every start-up check (settings, DATA_DIR, keys, database "
                             "and its schema) and print the settings, secrets masked")
    check.add_argument("--online", action="store_true",
                       help="also ask the Bot API (getMe) whether it accepts the token")
    commands.add_parser("rotate-keys", help="re-encrypt stored secrets with the first key in "
                                            "ENCRYPTION_KEYS (safe to interrupt and re-run)")
    commands.add_parser("generate-key", help="print a new key for ENCRYPTION_KEYS")

    wallet = commands.add_parser("wallet", help="operator actions on a user's wallet")
    wallet_commands = wallet.add_subparsers(dest="wallet_command", metavar="WALLET_COMMAND",
                                            required=True)
    credit = wallet_commands.add_parser(
        "credit", help="credit a cash or bank-transfer payment (once per reference)")
    credit.add_argument("user_id", help="the user's Telegram id")
    credit.add_argument("amount", help="e.g. 10, 10.50 or 40000 KHR")
    credit.add_argument("--reference", required=True,
                        help="the payment's own reference (bank transaction id, receipt no.)")
    _broadcast_parser(commands)
    charges = commands.add_parser("charges", help="list charges, newest first")
    charges.add_argument("state", nargs="?", choices=STATES, metavar="STATE",
                         help=f"only this state: {', '.join(STATES)}")
    charges.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    providers = commands.add_parser("providers", help="the top-up provider (CARRIER_BACKEND)")
    providers_commands = providers.add_subparsers(dest="providers_command",
                                                  metavar="PROVIDERS_COMMAND", required=True)
    providers_commands.add_parser("check", help="get a token, read the balance and the KH "
                                                "operators' catalogs, and print them")

    reconcile = commands.add_parser(
        "reconcile", help="match a day's charges against the provider's transactions; "
                          "print and store every difference (exit 1 when there are any)")
    reconcile.add_argument("--date", help="YYYY-MM-DD in DEFAULT_TIMEZONE (default: yesterday)")

    sim = commands.add_parser("sim", help="inspect or change a line on the simulated carrier")
    sim_commands = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    show = sim_commands.add_parser("show", help="balance, data, validity and recent top-ups")
    show.add_argument("phone", help="Cambodian mobile number, e.g. 012345678 or +85512345678")
    balance = sim_commands.add_parser("set-balance", help="set the line's airtime balance")
    balance.add_argument("phone")
    balance.add_argument("amount", help="e.g. 5, 5.50 or $2 (US dollars)")
    data = sim_commands.add_parser("use-data", help="consume mobile data on the line")
    data.add_argument("phone")
    data.add_argument("megabytes", help="whole megabytes, e.g. 500")
    validity = sim_commands.add_parser("set-validity", help="end validity in N days")
    validity.add_argument("phone")
    validity.add_argument("days", help="days from now (0 ends it now)")
    return parser


def _broadcast_parser(commands: Any) -> None:
    broadcast_parser = commands.add_parser(
        "broadcast", help="send an offer to the users who opted in to promotions (all, or "
                          "those with a line of one operator); `broadcast status ID` tells "
                          "how it went")
    broadcast_parser.add_argument("--to", metavar="all|OPERATOR",
                                  help="all, smart, cellcard, metfone or seatel")
    broadcast_parser.add_argument("--text", help="the offer (at most 4000 characters)")
    broadcast_parser.add_argument("--yes", action="store_true",
                                  help="send without asking")
    broadcast_commands = broadcast_parser.add_subparsers(
        dest="broadcast_command", metavar="status", required=False)
    status = broadcast_commands.add_parser(
        "status", help="what became of a broadcast: delivered, blocked, failed, pending")
    status.add_argument("id", help="the broadcast's number")


def main(argv: Sequence[str] | None = None) -> int:
    # RetryAfter.retry_after as a timedelta now (PTB's next major default), so a 429 does not
    # log a deprecation warning each time; handlers/outbox.py reads both forms.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
        logging.basicConfig(level=settings.logging.level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for chatty in ("httpx", "alembic", "apscheduler"):
            logging.getLogger(chatty).setLevel(max(settings.logging.level, logging.WARNING))
        return _dispatch(args, settings)
    except StartupFailure as exc:
        print(f"topup-bot: {exc}", file=sys.stderr)
        return exc.exit_status
    except (SettingsError, CliError, KeyConfigError, migrate.SchemaError) as exc:
        print(f"topup-bot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_FAILED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check-config":
        return _check_config(settings, online=args.online)
    if args.command == "generate-key":
        print(generate_fernet_key())
        return EXIT_OK
    if args.command == "run":
        settings.telegram.require_token()
        from bot.app import run  # the Telegram stack is only loaded to run the bot

        run(build_components(settings))
        return EXIT_OK
    if args.command == "worker":
        settings.telegram.require_token()  # it sends the notifications
        from bot.app import run_worker

        name = args.name or f"{socket.gethostname()}-{os.getpid()}"
        if not 1 <= len(name) <= 64:
            raise CliError("--name must be 1 to 64 characters")
        run_worker(build_components(settings, worker=name))
        return EXIT_OK
    if args.command == "status":
        return _with_components(settings, _status)
    if args.command == "migrate":
        return _with_components(settings, _migrate)
    if args.command == "rotate-keys":
        return _with_components(settings, _rotate_keys)
    if args.command == "sim":
        return _sim(args, settings)
    if args.command == "providers":
        return _providers_check(settings)
    if args.command == "reconcile":
        day = _reconcile_day(args.date, settings)
        return _with_components(settings, lambda c: _reconcile(c, day))
    if args.command == "wallet":
        return _with_components(settings, lambda c: _wallet_credit(c, args))
    if args.command == "charges":
        return _with_components(settings, lambda c: _charges(c, args))
    if args.command == "broadcast":
        return _broadcast(args, settings)
    raise CliError(f"unknown command {args.command}")  # pragma: no cover - argparse checks


def _with_components(settings: Settings,
                     action: Callable[[Components], Awaitable[int]]) -> int:
    async def go() -> int:
        components = build_components(settings)  # DATA_DIR and keys checked
        try:
            await check_database(components.db, settings.storage)
            return await action(components)
        finally:
            await components.db.dispose()

    return asyncio.run(go())


def _reconcile_day(text: str | None, settings: Settings) -> date:
    if text is None:
        return datetime.now(settings.locale.zone).date() - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"--date {text!r} is not a date (YYYY-MM-DD)") from None


async def _reconcile(components: Components, day: date) -> int:
    await _require_schema(components)
    failed = False
    for reconciliation in components.reconciliations:  # the top-up and the eSIM provider
        try:
            report = await reconciliation.reconcile(day, actor="cli")
        except GatewayError as exc:
            print(f"topup-bot: the provider could not list {day}: {exc}", file=sys.stderr)
            failed = True
            continue
        for line in format_reconciliation(report):
            print(line)
        failed = failed or bool(report.differences)
    return EXIT_FAILED if failed else EXIT_OK


def _providers_check(settings: Settings) -> int:
    """No database needed: only the provider is asked."""
    async def go() -> int:
        components = build_components(settings)
        try:
            for line in await providers_check(components):
                print(line)
        except ProviderCheckFailed as exc:
            print(f"topup-bot: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await components.aclose()
        print("The provider answers.")
        return EXIT_OK

    return asyncio.run(go())


def _check_config(settings: Settings, *, online: bool) -> int:
    """Every start-up check `run` makes (bot/startup.py), without starting anything."""
    settings.telegram.require_token()

    async def go() -> StartupReport:
        components = build_components(settings)
        bot = None
        if online:
            from telegram import Bot  # the Telegram stack only when it is asked

            telegram = settings.telegram
            bot = Bot(telegram.require_token(), base_url=telegram.bot_base_url,
                      base_file_url=telegram.file_base_url)
        try:
            return await check_start_up(settings, components.db, bot)
        finally:
            if bot is not None:
                await bot.shutdown()
            await components.db.dispose()

    report = asyncio.run(go())
    width = max(len(name) for name in settings.masked())
    for name, value in settings.masked().items():
        print(f"{name.ljust(width)}  {value}")
    print(_schema_status(report.schema_revision))
    if report.bot is None:
        print("Bot API: not asked (check-config --online asks it, with getMe)")
    else:
        print(f"Bot API: {settings.telegram.api_root} accepts the token "
              f"(@{report.bot.username})")
    print("Configuration is valid.")
    return EXIT_OK


def _schema_status(revision: str | None) -> str:
    head = migrate.head_revision()
    if revision == head:
        return f"Database: reachable, schema revision {head} (current)"
    if revision is None:
        return f"Database: reachable, empty (`run` or `migrate` creates schema {head})"
    return (f"Database: reachable, schema revision {revision} (`run` or `migrate` upgrades "
            f"it to {head})")


async def _migrate(components: Components) -> int:
    before = await migrate.current_revision(components.db)
    await migrate.upgrade(components.db, cipher=components.cipher)
    after = await migrate.current_revision(components.db)
    print(f"Database at schema revision {after}" + ("" if before == after
                                                    else f" (was {before or 'empty'})"))
    return EXIT_OK


async def _rotate_keys(components: Components) -> int:
    await _require_schema(components)
    report = await components.keys.rotate()
    print(f"Re-encrypted {report.rotated} of {report.examined} rows with the primary key.")
    return EXIT_OK


async def _wallet_credit(components: Components, args: argparse.Namespace) -> int:
    await _require_schema(components)
    try:
        print(await wallet_credit(components, args.user_id, args.amount, args.reference))
    except WalletCliError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


async def _charges(components: Components, args: argparse.Namespace) -> int:
    await _require_schema(components)
    if not 1 <= args.limit <= 10_000:
        raise CliError("--limit must be from 1 to 10000")
    print(await list_charges(components, args.state, args.limit))
    return EXIT_OK


def _broadcast(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.broadcast_command == "status":
            broadcast_id = parse_broadcast_id(args.id)

            async def status(components: Components) -> int:
                await _require_schema(components)
                print(await broadcast_status(components, broadcast_id))
                return EXIT_OK

            return _with_components(settings, status)
        offer = parse_offer(args.to, args.text)

        async def send(components: Components) -> int:
            await _require_schema(components)
            try:
                print(await broadcast(components, offer, yes=args.yes))
            except NotSent as exc:
                print(f"topup-bot: {exc}", file=sys.stderr)
                return EXIT_FAILED
            return EXIT_OK

        return _with_components(settings, send)
    except BroadcastCliError as exc:
        raise CliError(str(exc)) from None


async def _status(components: Components) -> int:
    await _require_schema(components)
    print(await scheduler_status(components))
    return EXIT_OK


async def _require_schema(components: Components) -> None:
    if await migrate.current_revision(components.db) != migrate.head_revision():
        raise CliError("the database schema is not current: run `topup-bot migrate` first")


def _sim(args: argparse.Namespace, settings: Settings) -> int:
    number = _phone(args.phone)
    change = _sim_change(args, number)

    async def go(components: Components) -> int:
        await _require_schema(components)
        print(_describe(await change(components), number, settings))
        if args.sim_command != "show":
            # As a provider's usage webhook would: the bot looks at the line at its next sweep.
            await components.scheduler.check_soon(number.e164)
        return EXIT_OK

    return _with_components(settings, go)


def _sim_change(args: argparse.Namespace,
                number: MobileNumber) -> Callable[[Components], Awaitable[SimLineState]]:
    """The `sim` sub-command as one call on the carrier; its arguments checked up front."""
    e164, operator = number.e164, number.operator
    if args.sim_command == "set-balance":
        amount = _usd(args.amount)
        return lambda c: c.simulator.set_balance(e164, operator, amount)
    if args.sim_command == "use-data":
        megabytes = _whole_number(args.megabytes, "megabytes", minimum=1, maximum=10_000_000)
        return lambda c: c.simulator.use_data(e164, operator, megabytes)
    if args.sim_command == "set-validity":
        days = _whole_number(args.days, "days", minimum=0, maximum=3650)
        return lambda c: c.simulator.set_validity(e164, operator,
                                                c.clock.now() + timedelta(days=days))
    return lambda c: c.simulator.show(e164, operator)


def _phone(text: str) -> MobileNumber:
    try:
        return parse_cambodian_mobile(text)
    except PhoneError as exc:
        raise CliError(f"{text!r} refused: {describe_phone_error(exc)}") from None


def _usd(text: str) -> Money:
    try:
        amount = parse_money(text, "USD")
    except MoneyError as exc:
        if exc.reason is MoneyError.Reason.ZERO:
            return Money(0, "USD")
        raise CliError(f"{text!r} is not an amount: {exc}") from None
    if amount.currency != "USD":
        raise CliError("simulated line balances are in US dollars")
    return amount


def _whole_number(text: str, name: str, *, minimum: int, maximum: int) -> int:
    number = whole_number(text)
    if number is None or not minimum <= number <= maximum:
        raise CliError(f"{name} must be a whole number from {minimum} to {maximum}, not {text!r}")
    return number


def _describe(state: SimLineState, number: MobileNumber, settings: Settings) -> str:
    zone = settings.locale.zone

    def when(moment: datetime | None) -> str:
        if moment is None:
            return "never"
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    data = f"{state.data_mb / 1024:.2f} GB" if state.data_mb >= 1024 else f"{state.data_mb} MB"
    out = [
        f"Line      {number.e164} ({number.national})",
        f"Operator  {state.operator.display_name}",
        f"Status    {state.status.value}",
        f"Balance   {state.balance.plain()}",
        f"Data      {data}" + (f" (expires {when(state.data_expires_at)})"
                               if state.data_expires_at else ""),
        f"Valid to  {when(state.validity_end)}",
        f"Recycled  {when(state.recycle_at)} unless topped up",
        f"Last top-up {when(state.last_topup_at)}",
    ]
    for topup in state.recent_topups:
        amount = Money(topup.amount_minor, topup.currency).plain()
        reason = f" ({topup.failure_reason})" if topup.failure_reason else ""
        out.append(f"  {when(topup.created_at)}  {amount}  {topup.status}{reason}  "
                   f"ref {topup.reference}  tx {topup.provider_tx_id}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

