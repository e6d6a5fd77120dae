"""What the scheduler pushes into the chat, as the user reads it, and its two buttons.

* Rendering: every notification kind of bot/services/scheduler.py (warnings, "cannot read
  your line", reminders, missed and skipped runs), with its parameters built the way the
  scheduler builds them, in English, Khmer and Simplified Chinese.
* Delivery: a low-balance warning found by a real balance sweep goes out through the
  outbox (NotificationDispatcher + TelegramDeliverer on the recording Bot API).
* "💤 Remind me later" (v1:sz:<line>) and "⏭ Skip this time" (v1:sk:<rule>:<epoch>)
  pressed through the real Application, by the owner, by a stranger, forged and stale.
* "⚡ Top up" on a low-balance warning while the rule's own approval request waits: no
  second charge; the answer points at the request, posted again with its buttons.

The harness here is the flow harness on every backend: SQLite, and PostgreSQL when
TEST_POSTGRES_URL is set (skip_run compares timestamps in SQL, which the backends store
differently).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import build_application
from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.phone import MobileNumber
from bot.domain.readings import LineReading, ReadingSource, estimate_from_last_topup
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger, first_run_at
from bot.domain.watch import Warning, WarningKind
from bot.gateways.simulated_catalog import PRODUCTS
from bot.i18n import Translations
from bot.services.charging import APPROVAL_REQUEST, ApprovalRequest
from bot.services.notifications import NotificationDispatcher
from bot.services.rules import RuleView
from bot.services.scheduler import (
    LINE_UNREADABLE,
    RUN_REMINDER,
    RUN_SKIPPED,
    RUNS_MISSED,
    WARNING,
    LineShown,
    LineUnreadable,
    PlanShown,
    RunReminder,
    SchedulerService,
)
from bot.settings import load_settings
from bot.wiring import build_components
from handlers.approvals import render_approval_request
from handlers.common import Ui, user_ui
from handlers.outbox import TelegramDeliverer, render
from handlers.render import data_text
from storage import migrate
from storage.audit import AuditEntry, AuditRepository
from storage.lines import LineRecord, LinesRepository
from storage.rules import RuleRecord, RulesRepository
from storage.tables import charges, notifications
from tests.conftest import BACKENDS, create_postgres_database, drop_postgres_database
from tests.fakes.sms import RecordingSms
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard, last_answer, line_row
from tests.flow.recording import BOT_TOKEN, RecordingRequest, callback_update

OWNER, STRANGER = 555, 666
CELLCARD = "+85512345678"
LABEL = "012 ••• 678"  # how the line reads in the chat (no nickname)
ZONE = ZoneInfo("Asia/Phnom_Penh")
LANGUAGES = ["en", "km", "zh_Hans"]
I18N = Translations()
PLAN = "cellcard-data-2048-1d"

SNOOZED = "OK. I will look again in a few hours and warn you if it is still low."
NOT_YOURS = "That line is not yours or no longer bound."
NOT_SCHEDULED = ("That top-up is no longer scheduled: it ran already, or the rule changed. "
                 "See /autorecharge.")
WENT_WRONG = "something went wrong"
INACTIVE = "That button is no longer active."  # what a button gets whose data is not ours


# --- the harness, on every backend -----------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    """tests/flow/conftest.py's harness, on SQLite and (when available) PostgreSQL."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    for name in ("DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "TELEGRAM_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    url = await create_postgres_database(migrated=True) if request.param == "postgres" else None
    if url is not None:
        monkeypatch.setenv("DATABASE_URL", url)
    try:
        sms = RecordingSms()
        components = build_components(load_settings(env_file=None), clock=clock, sms=sms)
        await migrate.upgrade(components.db)
        api = RecordingRequest()
        app = build_application(components, request=api)
        await app.initialize()
        await app.start()
        yield BotHarness(app=app, api=api, components=components, sms=sms)
        await app.stop()
        await app.shutdown()
        await components.db.dispose()
    finally:
        if url is not None:
            await drop_postgres_database(url)


# --- helpers -------------------------------------------------------------------------


def ui_in(language: str, now: datetime) -> Ui:
    return Ui.of(I18N, language, ZONE, now)


def stored(params: dict[str, Any]) -> dict[str, Any]:
    """The params as the outbox hands them back: through JSON."""
    return dict(json.loads(json.dumps(params)))


def buttons_of(markup: Any) -> list[tuple[str, str]]:
    if markup is None:
        return []
    return [(str(b.text), str(b.callback_data)) for row in markup.inline_keyboard for b in row]


def a_line(now: datetime, *, plan: str | None = PLAN) -> LineRecord:
    return LineRecord(id=7, owner_id=OWNER,
                      number=MobileNumber(e164=CELLCARD, operator=Operator.CELLCARD),
                      iccid=None, nickname=None, verified_at=now - timedelta(days=30),
                      next_check_at=now, created_at=now - timedelta(days=30),
                      plan_product_id=plan, warn_balance_minor=100, warn_data_mb=2048)


def provider_reading(now: datetime, validity_end: datetime) -> LineReading:
    return LineReading(source=ReadingSource.PROVIDER, read_at=now - timedelta(hours=1),
                       balance=Money(50, "USD"), data_mb=1536, validity_end=validity_end)


def warning_params(line: LineRecord, reading: LineReading | None, kind: WarningKind,
                   recycle_at: datetime | None = None) -> dict[str, Any]:
    """As SchedulerService._evaluate queues a warning: the line, its reading and plan."""
    shown = LineShown.of(line, reading, PRODUCTS.get(line.plan_product_id or ""))
    return stored(SchedulerService._warning(Warning(kind, "1"), line, shown,
                                            recycle_at).to_params())


def top_up_buttons(ui: Ui, line_id: int, plan: str | None) -> list[tuple[str, str]]:
    _ = ui._
    rows = []
    if plan is not None:
        product = PRODUCTS[plan]
        rows.append((_("⚡ Buy now: {plan} ({price})").format(
            plan=product.name, price=ui.money(product.price)), f"v1:tn:{line_id}:{plan}"))
    rows += [(_("⚡ Top up {amount}").format(amount=ui.money(Money(cents, "USD"))),
              f"v1:tn:{line_id}:a{cents}") for cents in (100, 200, 500)]
    return rows


def differs_from_english(text: str, english: str, language: str) -> None:
    if language == "en":
        assert text == english
        return
    assert text != english
    script = {"km": "[\u1780-\u17ff]", "zh_Hans": "[\u4e00-\u9fff]"}[language]
    assert re.search(script, text), text


async def calendar_rule(harness: BotHarness, line_id: int, *, owner: int = OWNER,
                        next_run_at: datetime | None = None,
                        approval: Approval = Approval.ASK) -> RuleRecord:
    """An active monthly rule (the 26th, 09:00 in Phnom Penh: a day after the test clock),
    as if its code had been confirmed."""
    c = harness.components
    now = c.clock.now()
    spec = RuleSpec(trigger=Trigger.CALENDAR, monthly_cap=Money(2000, "USD"),
                    approval=approval, amount=Money(500, "USD"),
                    calendar=CalendarKind.MONTHLY, calendar_value=26)
    async with c.db.write() as conn:
        return await RulesRepository(conn).add(
            line_id=line_id, owner_id=owner, spec=spec, now=now, status=RuleStatus.ACTIVE,
            next_run_at=next_run_at or first_run_at(spec, now, ZONE))


async def rule_row(harness: BotHarness, rule_id: int) -> RuleRecord:
    async with harness.components.db.read() as conn:
        rule = await RulesRepository(conn).get(rule_id)
    assert rule is not None
    return rule


async def queued(harness: BotHarness, kind: str) -> list[dict[str, Any]]:
    async with harness.components.db.read() as conn:
        rows = await conn.execute(select(notifications).where(notifications.c.kind == kind)
                                  .order_by(notifications.c.id))
        return [dict(row) for row in rows.mappings()]


async def audit(harness: BotHarness, action: str) -> list[AuditEntry]:
    async with harness.components.db.read() as conn:
        return await AuditRepository(conn).latest(action=action)


async def owner_ui(harness: BotHarness, user_id: int = OWNER) -> Ui:
    c = harness.components
    return await user_ui(c.users, c.i18n, user_id, None)


async def low_line(harness: BotHarness) -> int:
    """The owner's Cellcard line, read by a real balance sweep at $0.50 with 2 GB warning
    thresholds of $1.00 and 100 GB of data: both low episodes open, warnings queued."""
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    now = c.clock.now()
    await c.simulator.set_balance(CELLCARD, Operator.CELLCARD, Money(50, "USD"))
    await c.simulator.set_validity(CELLCARD, Operator.CELLCARD, now + timedelta(days=30))
    async with c.db.write() as conn:
        await LinesRepository(conn, c.cipher).set_warnings(
            line_id, balance_minor=100, data_mb=100 * 1024, now=now)
    await c.scheduler.check_lines()
    line = await line_row(harness, line_id)
    assert line.episodes.balance_low and line.episodes.data_low
    return line_id


def press(data: str, *, user_id: int = OWNER, text: str = "...", message_id: int = 1,
          language: str = "en") -> dict[str, Any]:
    update = callback_update(data, user_id=user_id, language=language, message_id=message_id)
    update["callback_query"]["message"]["text"] = text
    return update


def answers(harness: BotHarness) -> list[dict[str, Any]]:
    return harness.api.sent("answerCallbackQuery")


def edits(harness: BotHarness) -> list[dict[str, Any]]:
    return harness.api.sent("editMessageText")


def no_errors(harness: BotHarness) -> None:
    assert not any(WENT_WRONG in text for text in harness.api.texts()), harness.api.texts()


# --- 1. rendering -------------------------------------------------------------------


LOW_KINDS = {WarningKind.LOW_BALANCE, WarningKind.LOW_DATA}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", list(WarningKind))
def test_a_warning_shows_the_line_its_figures_and_the_right_buttons(
        clock: ManualClock, kind: WarningKind, language: str) -> None:
    now = clock.now()
    line = a_line(now)
    validity_end = now + {WarningKind.VALIDITY_HOUR: timedelta(minutes=40),
                          WarningKind.VALIDITY_24_HOURS: timedelta(hours=20),
                          WarningKind.VALIDITY_3_DAYS: timedelta(days=2)}.get(
        kind, timedelta(days=20))
    recycle_at = now + timedelta(days=10) if kind is WarningKind.RECYCLING else None
    params = warning_params(line, provider_reading(now, validity_end), kind, recycle_at)
    ui = ui_in(language, now)
    _ = ui._

    text, markup = render(WARNING, ui, params)

    assert LABEL in text
    assert ui.money(Money(50, "USD")) in text  # the balance read
    assert data_text(1536) == "1.5 GB" and "1.5 GB" in text
    assert ui.when(validity_end) in text
    assert _("read from the carrier") in text and ui.age(now - timedelta(hours=1)) in text
    headline = text.split("\n\n")[0]
    if kind is WarningKind.LOW_BALANCE:
        assert ui.money(Money(100, "USD")) in headline  # the threshold
    elif kind is WarningKind.LOW_DATA:
        assert "2.0 GB" in headline
    elif kind is WarningKind.RECYCLING:
        assert recycle_at is not None and ui.when(recycle_at) in headline
    else:
        assert ui.when(validity_end) in headline
    expected = top_up_buttons(ui, line.id, PLAN)
    if kind in LOW_KINDS:
        expected.append((_("💤 Remind me later"), f"v1:sz:{line.id}"))
    assert buttons_of(markup) == expected
    english, _english_markup = render(WARNING, ui_in("en", now), params)
    differs_from_english(text, english, language)
    if language == "en":
        assert "$0.50" in text and "read from the carrier" in text
        if kind in LOW_KINDS:
            assert buttons_of(markup)[-1] == ("💤 Remind me later", "v1:sz:7")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("source", "phrase"), [
    (ReadingSource.PROVIDER, "read from the carrier"),
    (ReadingSource.USER, "reported by you"),
    (ReadingSource.ESTIMATE, "estimated from the last top-up"),
])
def test_a_warning_says_where_its_figures_come_from(
        clock: ManualClock, source: ReadingSource, phrase: str, language: str) -> None:
    now = clock.now()
    line = a_line(now, plan=None)
    if source is ReadingSource.ESTIMATE:  # only a validity: what the last top-up bought
        reading = estimate_from_last_topup(Operator.CELLCARD, now - timedelta(days=6), 100)
        kind = WarningKind.VALIDITY_24_HOURS
        assert reading.validity_end is not None and reading.balance is None
    else:
        reading = LineReading(source=source, read_at=now - timedelta(hours=3),
                              balance=Money(50, "USD"), data_mb=300,
                              validity_end=now + timedelta(days=20))
        kind = WarningKind.LOW_BALANCE
    ui = ui_in(language, now)

    text, markup = render(WARNING, ui, warning_params(line, reading, kind))

    assert ui._(phrase) in text
    if language == "en":
        assert phrase in text
    assert LABEL in text
    assert reading.validity_end is not None and ui.when(reading.validity_end) in text
    if source is not ReadingSource.ESTIMATE:
        assert ui.money(Money(50, "USD")) in text and "300 MB" in text
    others = {"read from the carrier", "reported by you", "estimated from the last top-up"}
    assert not any(ui._(other) in text for other in others - {phrase})
    # No plan chosen: the airtime amounts only.
    assert [data for _text, data in buttons_of(markup)][:3] == [
        f"v1:tn:{line.id}:a100", f"v1:tn:{line.id}:a200", f"v1:tn:{line.id}:a500"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_line_unreadable_names_the_line_and_has_no_buttons(clock: ManualClock,
                                                           language: str) -> None:
    now = clock.now()
    line = a_line(now)
    params = stored(LineUnreadable(line=LineShown.of(line, None, None),
                                   error="GatewayTimeout").to_params())
    ui = ui_in(language, now)

    text, markup = render(LINE_UNREADABLE, ui, params)

    assert LABEL in text and "/balance" in text
    assert markup is None
    assert "GatewayTimeout" not in text  # the internal error is not shown
    differs_from_english(text, render(LINE_UNREADABLE, ui_in("en", now), params)[0], language)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("product_id", "approval"), [
    (None, "ask"), (None, "auto"), ("cellcard-data-6144-7d", "auto")])
def test_a_reminder_shows_what_and_when_and_a_skip_button(
        clock: ManualClock, language: str, product_id: str | None, approval: str) -> None:
    now = clock.now()
    run_at = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    params = stored(RunReminder(  # as SchedulerService.send_reminders queues it
        rule_id=12, line=LABEL, run_at=run_at, amount_minor=None if product_id else 500,
        currency="USD", product_id=product_id,
        plan=PlanShown.of(PRODUCTS.get(product_id or "")),
        approval=Approval(approval)).to_params())
    ui = ui_in(language, now)
    _ = ui._

    text, markup = render(RUN_REMINDER, ui, params)

    assert LABEL in text
    assert ui.when(run_at) in text
    if language == "en":
        assert "26 Nov 2026, 09:00" in text
    if product_id:
        assert PRODUCTS[product_id].name in text
    else:
        assert ui.money(Money(500, "USD")) in text
    assert (_("I will ask you to approve it then.") in text) is (approval == "ask")
    assert buttons_of(markup) == [(_("⏭ Skip this time"),
                                   f"v1:sk:12:{int(run_at.timestamp())}")]
    assert buttons_of(markup)[0][1] == "v1:sk:12:1795658400"
    differs_from_english(text, render(RUN_REMINDER, ui_in("en", now), params)[0], language)


@pytest.mark.parametrize("language", LANGUAGES)
def test_missed_runs_say_how_many_and_since_when(clock: ManualClock, language: str) -> None:
    now = clock.now()
    first = datetime(2026, 8, 26, 2, 0, tzinfo=UTC)
    params = stored({"rule_id": 12, "line": LABEL, "run_at": now.isoformat(), "missed": 3,
                     "first_missed": first.isoformat()})
    ui = ui_in(language, now)

    text, markup = render(RUNS_MISSED, ui, params)

    assert LABEL in text and "3" in text and ui.when(first) in text
    assert markup is None
    differs_from_english(text, render(RUNS_MISSED, ui_in("en", now), params)[0], language)


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_skipped_run_names_the_line_and_the_date(clock: ManualClock, language: str) -> None:
    now = clock.now()
    run_at = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    params = stored({"rule_id": 12, "line": LABEL, "run_at": run_at.isoformat()})
    ui = ui_in(language, now)

    text, markup = render(RUN_SKIPPED, ui, params)

    assert LABEL in text and ui.when(run_at) in text
    assert markup is None
    differs_from_english(text, render(RUN_SKIPPED, ui_in("en", now), params)[0], language)


# --- 2. delivery through the outbox ------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_low_balance_warning_arrives_with_its_buttons(harness: BotHarness,
                                                              language: str) -> None:
    c = harness.components
    line_id = await low_line(harness)
    assert await c.users.set_language(OWNER, language)  # as /language does
    [queued_warning] = [row for row in await queued(harness, WARNING)
                        if row["params"]["warning"] == WarningKind.LOW_BALANCE]
    assert queued_warning["params"]["balance_minor"] == 50

    await NotificationDispatcher(c.db, c.clock,
                                 TelegramDeliverer(harness.app.bot, c.users, c.i18n)).run()

    ui = await owner_ui(harness)
    assert ui.language == language
    _ = ui._
    headline = _("⚠️ {line}: the balance is below {threshold}.").format(
        line=LABEL, threshold=ui.money(Money(100, "USD")))
    sent = [p for p in harness.api.sent() if int(p["chat_id"]) == OWNER
            and str(p["text"]).startswith(headline)]
    assert len(sent) == 1, harness.api.texts(OWNER)
    text = str(sent[0]["text"])
    assert ui.money(Money(50, "USD")) in text and _("read from the carrier") in text
    assert keyboard(sent[0]) == [*top_up_buttons(ui, line_id, None),
                                 (_("💤 Remind me later"), f"v1:sz:{line_id}")]
    english = render(WARNING, ui_in("en", ui.now), queued_warning["params"])[0]
    differs_from_english(text, english, language)
    if language == "en":
        assert "$0.50" in text
    [after] = [row for row in await queued(harness, WARNING)
               if row["id"] == queued_warning["id"]]
    assert after["status"] == "sent" and after["message_id"] is not None


# --- 3. "Remind me later" ----------------------------------------------------------


async def test_remind_me_later_closes_the_low_episodes_and_looks_again_in_six_hours(
        harness: BotHarness) -> None:
    c = harness.components
    line_id = await low_line(harness)
    warned = len(await queued(harness, WARNING))

    await harness.send(press(f"v1:sz:{line_id}"))

    answer = last_answer(harness)
    assert answer["text"] == SNOOZED and answer["show_alert"] is True
    line = await line_row(harness, line_id)
    assert not line.episodes.balance_low and not line.episodes.data_low
    assert line.next_check_at == c.clock.now() + timedelta(hours=6)
    [entry] = await audit(harness, "line.warnings_snoozed")
    assert (entry.actor, entry.subject) == (f"user:{OWNER}", str(line_id))
    no_errors(harness)

    # Not looked at before then ...
    c.clock.advance(timedelta(hours=5))
    await c.scheduler.check_lines()
    assert len(await queued(harness, WARNING)) == warned
    # ... and still low then: warned again, as a new episode.
    c.clock.advance(timedelta(hours=1))
    await c.scheduler.check_lines()
    keys = {row["dedupe_key"] for row in await queued(harness, WARNING)}
    assert {f"warn:low_balance:{line_id}:2", f"warn:low_data:{line_id}:2"} <= keys


async def test_remind_me_later_answers_in_the_users_language(harness: BotHarness) -> None:
    c = harness.components
    line_id = await low_line(harness)
    assert await c.users.set_language(OWNER, "km")

    await harness.send(press(f"v1:sz:{line_id}", language="km"))

    text = str(last_answer(harness)["text"])
    assert text == I18N.gettext("km")(SNOOZED) != SNOOZED
    assert not (await line_row(harness, line_id)).episodes.balance_low


async def assert_snooze_refused(harness: BotHarness, line_id: int, data: str,
                                user_id: int, *, answered_with: str = NOT_YOURS) -> None:
    """The press is answered (an alert saying why; ``INACTIVE``, a toast, for data that
    does not decode) and the line is as it was."""
    before = await line_row(harness, line_id)
    answered = len(answers(harness))

    await harness.send(press(data, user_id=user_id))

    assert len(answers(harness)) == answered + 1
    answer = last_answer(harness)
    assert answer["text"] == answered_with
    assert answer.get("show_alert") is (None if answered_with == INACTIVE else True)
    assert await line_row(harness, line_id) == before
    assert await audit(harness, "line.warnings_snoozed") == []
    no_errors(harness)


async def test_a_stranger_cannot_snooze_someone_elses_line(harness: BotHarness) -> None:
    line_id = await low_line(harness)
    await bind(harness, "+85592345678", user_id=STRANGER)  # a line of their own

    await assert_snooze_refused(harness, line_id, f"v1:sz:{line_id}", STRANGER)


@pytest.mark.parametrize("data", [
    "v1:sz:abc", "v1:sz:0", "v1:sz:99999", "v1:sz:-1", "v1:sz:1234567890123456789",
])
async def test_a_forged_snooze_button_changes_nothing(harness: BotHarness, data: str) -> None:
    line_id = await low_line(harness)
    await assert_snooze_refused(harness, line_id, data, OWNER)


@pytest.mark.parametrize("data", ["v1:sz:", "v1:sz", "v1:sz:1:2"])
async def test_a_snooze_button_that_does_not_decode_changes_nothing(harness: BotHarness,
                                                                    data: str) -> None:
    line_id = await low_line(harness)
    await assert_snooze_refused(harness, line_id, data, OWNER, answered_with=INACTIVE)


async def test_remind_me_later_on_an_unbound_line_is_refused(harness: BotHarness) -> None:
    c = harness.components
    line_id = await low_line(harness)
    assert await c.lines.unbind(OWNER, line_id) is not None
    await assert_snooze_refused(harness, line_id, f"v1:sz:{line_id}", OWNER)


# --- 4. "Skip this time" -----------------------------------------------------------


async def reminded(harness: BotHarness) -> tuple[RuleRecord, str, str]:
    """A bound line, an active monthly rule due tomorrow, and the reminder the real sweep
    queued for it: (rule, the reminder's text, the skip button's data)."""
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    rule = await calendar_rule(harness, line_id)
    assert rule.next_run_at == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    await c.scheduler.send_reminders()
    [reminder] = await queued(harness, RUN_REMINDER)
    text, markup = render(RUN_REMINDER, await owner_ui(harness), reminder["params"])
    [(label, data)] = buttons_of(markup)
    assert label == "⏭ Skip this time"
    assert data == f"v1:sk:{rule.id}:{int(rule.next_run_at.timestamp())}"
    assert "$5.00" in text and "26 Nov 2026, 09:00" in text
    return rule, text, data


async def test_skip_this_time_marks_the_next_run_skipped(harness: BotHarness) -> None:
    rule, text, data = await reminded(harness)

    await harness.send(press(data, text=text, message_id=40))

    answer = last_answer(harness)
    assert answer["text"] == "Skipped." and not answer.get("show_alert")
    edit = edits(harness)[-1]
    assert edit["text"] == f"{text}\n\n⏭ You skipped this one."
    assert int(edit["message_id"]) == 40 and not keyboard(edit)  # the button is gone
    after = await rule_row(harness, rule.id)
    assert after.skip_run_at is not None and after.skip_run_at == after.next_run_at
    assert after.next_run_at == rule.next_run_at and after.status is RuleStatus.ACTIVE
    [entry] = await audit(harness, "rule.run_skipped")
    assert entry.subject == str(rule.id)
    no_errors(harness)


async def test_a_skipped_run_is_not_charged_and_the_user_is_told(harness: BotHarness) -> None:
    c = harness.components
    rule, text, data = await reminded(harness)
    await harness.send(press(data, text=text))
    assert rule.next_run_at is not None

    c.clock.set(rule.next_run_at + timedelta(minutes=1))
    await c.scheduler.run_calendar()

    [skipped] = await queued(harness, RUN_SKIPPED)
    rendered, _markup = render(RUN_SKIPPED, await owner_ui(harness), skipped["params"])
    assert LABEL in rendered and "26 Nov 2026, 09:00" in rendered
    async with c.db.read() as conn:
        assert (await conn.execute(select(charges))).all() == []
    after = await rule_row(harness, rule.id)
    assert after.next_run_at == datetime(2026, 12, 26, 2, 0, tzinfo=UTC)

    # The old reminder's button now points at a run that is gone.
    await harness.send(press(data, text=text))
    assert last_answer(harness)["text"] == NOT_SCHEDULED
    assert (await rule_row(harness, rule.id)).next_run_at == after.next_run_at


async def test_pressing_skip_twice_is_answered_without_error(harness: BotHarness) -> None:
    rule, text, data = await reminded(harness)
    await harness.send(press(data, text=text, message_id=40))
    first = await rule_row(harness, rule.id)
    answered = len(answers(harness))

    await harness.send(press(data, text=text, message_id=40))  # a double tap

    assert len(answers(harness)) == answered + 1
    assert last_answer(harness)["text"] == "Skipped."  # the same answer, nothing more done
    after = await rule_row(harness, rule.id)
    assert after.skip_run_at == first.skip_run_at == after.next_run_at
    assert after.status is RuleStatus.ACTIVE
    assert len(await audit(harness, "rule.run_skipped")) == 1
    no_errors(harness)


async def assert_skip_refused(harness: BotHarness, rule_id: int, data: str,
                              user_id: int = OWNER, *,
                              answered_with: str = NOT_SCHEDULED) -> None:
    """The press is answered (an alert saying why; ``INACTIVE``, a toast, for data that
    does not decode), the reminder is not edited and the rule is as it was."""
    before = await rule_row(harness, rule_id)
    answered, edited = len(answers(harness)), len(edits(harness))

    await harness.send(press(data, user_id=user_id, text="🗓 Reminder"))

    assert len(answers(harness)) == answered + 1
    answer = last_answer(harness)
    assert answer["text"] == answered_with
    assert answer.get("show_alert") is (None if answered_with == INACTIVE else True)
    assert len(edits(harness)) == edited
    assert await rule_row(harness, rule_id) == before
    assert await audit(harness, "rule.run_skipped") == []
    no_errors(harness)


async def test_a_skip_for_another_run_time_is_refused(harness: BotHarness) -> None:
    rule, _text, _data = await reminded(harness)
    assert rule.next_run_at is not None
    seconds = int(rule.next_run_at.timestamp())
    for other in (seconds + 3600, seconds - 86400 * 30, seconds + 1):
        await assert_skip_refused(harness, rule.id, f"v1:sk:{rule.id}:{other}")


async def test_a_skip_for_a_run_already_due_is_refused(harness: BotHarness) -> None:
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    due = c.clock.now() - timedelta(minutes=5)  # due, not yet run by the sweep
    rule = await calendar_rule(harness, line_id, next_run_at=due)
    await assert_skip_refused(harness, rule.id, f"v1:sk:{rule.id}:{int(due.timestamp())}")
    now = c.clock.now()
    async with c.db.write() as conn:
        await RulesRepository(conn).update(rule.id, now=now, next_run_at=now)
    await assert_skip_refused(harness, rule.id, f"v1:sk:{rule.id}:{int(now.timestamp())}")


async def test_a_stranger_cannot_skip_someone_elses_run(harness: BotHarness) -> None:
    rule, _text, data = await reminded(harness)
    await bind(harness, "+85592345678", user_id=STRANGER)
    await assert_skip_refused(harness, rule.id, data, user_id=STRANGER)


async def test_a_paused_rule_or_an_unbound_line_has_no_run_to_skip(
        harness: BotHarness) -> None:
    c = harness.components
    rule, _text, data = await reminded(harness)
    assert isinstance(await c.rules.pause(OWNER, rule.id), RuleView)
    await assert_skip_refused(harness, rule.id, data)

    assert isinstance(await c.rules.resume(OWNER, rule.id), RuleView)
    resumed = await rule_row(harness, rule.id)
    assert resumed.status is RuleStatus.ACTIVE and resumed.next_run_at is not None
    fresh = f"v1:sk:{rule.id}:{int(resumed.next_run_at.timestamp())}"
    assert await c.lines.unbind(OWNER, rule.line_id) is not None
    await assert_skip_refused(harness, rule.id, fresh)


@pytest.mark.parametrize("data", [
    "v1:sk:abc:1795658400", "v1:sk:1:x", "v1:sk:-1:1795658400", "v1:sk:99999:1795658400",
])
async def test_a_forged_skip_button_changes_nothing(harness: BotHarness, data: str) -> None:
    rule, _text, _data = await reminded(harness)
    await assert_skip_refused(harness, rule.id, data.replace("v1:sk:1:", f"v1:sk:{rule.id}:"))


@pytest.mark.parametrize("data", [
    "v1:sk:1", "v1:sk", "v1:sk:1:1795658400:9", "v1:sk::1795658400",
])
async def test_a_skip_button_that_does_not_decode_changes_nothing(harness: BotHarness,
                                                                  data: str) -> None:
    rule, _text, _data = await reminded(harness)
    await assert_skip_refused(harness, rule.id, data.replace("v1:sk:1:", f"v1:sk:{rule.id}:"),
                              answered_with=INACTIVE)


@pytest.mark.parametrize("seconds", ["999999999999", "999999999999999999"])
async def test_a_skip_with_an_absurd_run_time_is_refused(harness: BotHarness,
                                                         seconds: str) -> None:
    rule, _text, _data = await reminded(harness)
    await assert_skip_refused(harness, rule.id, f"v1:sk:{rule.id}:{seconds}")


# --- 5. "Top up" on a warning while the rule's request waits ------------------------


async def low_line_with_an_ask_rule(harness: BotHarness) -> tuple[int, RuleRecord]:
    """The owner's line with an "ask" low-balance rule ($1.00), read low by a real sweep:
    the warning and the rule's approval request both queued."""
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    now = c.clock.now()
    spec = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=Money(2000, "USD"),
                    approval=Approval.ASK, amount=Money(500, "USD"),
                    threshold=Money(100, "USD"))
    async with c.db.write() as conn:
        rule = await RulesRepository(conn).add(line_id=line_id, owner_id=OWNER, spec=spec,
                                               now=now, status=RuleStatus.ACTIVE)
        await LinesRepository(conn, c.cipher).set_warnings(line_id, balance_minor=100,
                                                           data_mb=None, now=now)
    await c.simulator.set_balance(CELLCARD, Operator.CELLCARD, Money(50, "USD"))
    await c.scheduler.check_lines()
    return line_id, rule


@pytest.mark.parametrize("language", LANGUAGES)
async def test_top_up_on_a_warning_while_the_rules_request_waits_points_at_that_request(
        harness: BotHarness, language: str) -> None:
    c = harness.components
    line_id, rule = await low_line_with_an_ask_rule(harness)
    assert await c.users.set_language(OWNER, language)
    await c.wallet.credit_operator(OWNER, Money(2000, "USD"), "cash-1", actor="cli")
    dispatcher = NotificationDispatcher(c.db, c.clock,
                                        TelegramDeliverer(harness.app.bot, c.users, c.i18n))
    for _round in range(2):  # the warning, then (a second later) the approval request
        await dispatcher.run()
        c.clock.advance(timedelta(seconds=2))
    [request] = await queued(harness, APPROVAL_REQUEST)
    [rule_charge] = await c.charging.list_by_state(None)
    assert (rule_charge.rule_id, rule_charge.state) == (rule.id, ChargeState.AWAITING_APPROVAL)
    assert request["status"] == "sent" and request["message_id"] is not None
    [warning] = await queued(harness, WARNING)
    ui = await owner_ui(harness)
    _ = ui._
    top_up = f"v1:tn:{line_id}:a500"
    [warned] = [p for p in harness.api.sent() if str(p["text"]).startswith("⚠️")]
    assert top_up in [data for _label, data in keyboard(warned)]
    sent_before = len(harness.api.sent())

    await harness.send(press(top_up, message_id=int(warning["message_id"]), language=language))

    answer = last_answer(harness)
    assert answer["text"] == _("A top-up of {line} already waits for your approval: I sent "
                               "it again below.").format(line=LABEL)
    [again] = harness.api.sent()[sent_before:]
    headline = _("⏳ This top-up of {line} ({amount}) already waits for your answer. A line "
                 "has one top-up open at a time: approve or decline this one first.").format(
        line=LABEL, amount=ui.money(Money(500, "USD")))
    # The request as it was asked, with today's wallet (credited since it was queued).
    asked = ApprovalRequest.from_params(request["params"])
    assert asked.wallet == Money(0, "USD")
    shown, _markup = render_approval_request(ui, replace(asked, wallet=Money(2000, "USD")))
    assert again["text"] == f"{headline}\n\n{shown}"
    differs_from_english(headline, ui_in("en", ui.now)._(
        "⏳ This top-up of {line} ({amount}) already waits for your answer. A line has one "
        "top-up open at a time: approve or decline this one first.").format(
        line=LABEL, amount=ui_in("en", ui.now).money(Money(500, "USD"))), language)
    assert [data for _label, data in keyboard(again)] == [
        f"v1:ap:{rule_charge.id}:ok", f"v1:ap:{rule_charge.id}:no"]
    reply_to = again["reply_parameters"]
    reply_to = json.loads(reply_to) if isinstance(reply_to, str) else reply_to
    assert reply_to["message_id"] == request["message_id"]  # a reply to the request itself
    assert await c.charging.list_by_state(None) == [rule_charge]  # no second charge
    assert len(await queued(harness, APPROVAL_REQUEST)) == 1
    no_errors(harness)

    # Approve on the copy approves the rule's charge; then the line can be topped up again.
    await harness.send(press(f"v1:ap:{rule_charge.id}:ok", language=language))
    approved = await c.charging.get(rule_charge.id)
    assert approved is not None and approved.state is ChargeState.SUCCEEDED
    await harness.send(press(top_up, message_id=int(warning["message_id"]), language=language))
    assert last_answer(harness)["text"] == _("I sent you a request to approve: tap Approve "
                                             "on it.")
    assert len(await c.charging.list_by_state(ChargeState.AWAITING_APPROVAL)) == 1
    no_errors(harness)
