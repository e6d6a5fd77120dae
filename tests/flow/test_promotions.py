"""Promotions through the real Application: a user opts in and out in /settings (off by
default); an admin's /broadcast previews an offer to the opted-in users of one operator or
all, Confirm queues it once, the outbox delivers it (after quiet hours), and the report
counts delivered / blocked the bot / failed exactly. Plus what must change nothing: other
chats' /broadcast and buttons, bad input, a second Confirm, Cancel, an old preview."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.quiet_hours import QuietHours
from bot.services.notifications import NotificationDispatcher
from handlers.outbox import TelegramDeliverer
from storage.tables import audit_log, notifications, users
from tests.flow.conftest import BotHarness, open_harness
from tests.flow.helpers import bind, in_chat, keyboard, last_answer, last_edit, user_row
from tests.flow.recording import callback_update, text_update

ADMIN, ADMIN_GROUP, OTHER_GROUP = 4242, -100_900_900, -100_200_300
CELLCARD_1, CELLCARD_2, CELLCARD_3 = "+85512345678", "+85512345679", "+85511345678"
SMART, METFONE = "+85510345678", "+85597345678"
OFFER = "Double data on every top-up this weekend!"
OPT_OUT = "Stop offers: /settings"


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    """An admin in a private chat of their own, and an admin group."""
    env = {"ADMIN_CHAT_IDS": f"{ADMIN},{ADMIN_GROUP}"}
    async with open_harness(tmp_path, clock, monkeypatch, env) as opened:
        yield opened


# --- helpers ------------------------------------------------------------------------------


def answering(harness: BotHarness, errors: dict[int, tuple[int, str]]) -> None:
    """Makes the Bot API answer sendMessage to these chats with an error (status, text):
    403 for a user who blocked the bot, 400 for a message Telegram refuses."""
    api = harness.api
    answer = api.do_request

    async def do_request(url: str, method: str, request_data: Any = None,
                         **timeouts: Any) -> tuple[int, bytes]:
        params = dict(request_data.parameters) if request_data is not None else {}
        error = errors.get(int(params.get("chat_id", 0)))
        if url.endswith("/sendMessage") and error is not None:
            code, text = error
            return code, json.dumps({"ok": False, "error_code": code,
                                     "description": text}).encode()
        return await answer(url, method, request_data, **timeouts)

    api.do_request = do_request  # type: ignore[method-assign]


async def deliver(harness: BotHarness, *, rounds: int = 30) -> None:
    """Sends what is due, round after round, the clock moving on 1.1 s between them (a chat
    gets a message a second, offers are paced), until nothing is pending but what is held
    for later (quiet hours)."""
    c = harness.components
    assert isinstance(c.clock, ManualClock)
    dispatcher = NotificationDispatcher(c.db, c.clock, TelegramDeliverer(
        harness.app.bot, c.users, c.i18n, c.esims, c.support))
    for _ in range(rounds):
        await dispatcher.run()
        upcoming = await next_due(harness)
        if upcoming is None or upcoming - c.clock.now() > timedelta(seconds=5):
            return
        c.clock.advance(timedelta(seconds=1.1))
    raise AssertionError(f"notifications still pending after {rounds} rounds")


async def next_due(harness: BotHarness) -> datetime | None:
    async with harness.components.db.read() as conn:
        found: datetime | None = (await conn.execute(
            select(func.min(notifications.c.next_attempt_at)).where(
                notifications.c.status == "pending"))).scalar()
    return found


async def opt_in(harness: BotHarness, user_id: int, on: bool = True) -> None:
    await harness.send(callback_update("v1:st:promo_on" if on else "v1:st:promo_off",
                                       user_id=user_id))


async def a_user(harness: BotHarness, user_id: int, phone: str | None = None, *,
                 promotions: bool = True) -> None:
    """A user who said /start, with a line of ``phone`` bound, who opted in (or not)."""
    if phone is not None:
        await bind(harness, phone, user_id=user_id)
    else:
        await harness.send(text_update("/start", user_id=user_id))
    if promotions:
        await opt_in(harness, user_id)


def offers(harness: BotHarness) -> dict[int, str]:
    """Chat -> the offer it received (the opt-out line under it)."""
    return {int(p["chat_id"]): str(p["text"]) for p in harness.api.sent()
            if OPT_OUT in str(p["text"]) and int(p["chat_id"]) not in (ADMIN, ADMIN_GROUP)}


async def broadcast(harness: BotHarness, words: str, *, chat_id: int = ADMIN,
                    ) -> int:
    """An admin sends /broadcast and gets the preview; the broadcast's number."""
    await harness.send(in_chat(text_update(f"/broadcast {words}", user_id=ADMIN), chat_id))
    sent = [p for p in harness.api.sent() if int(p["chat_id"]) == chat_id]
    buttons = keyboard(sent[-1])
    assert [data.rsplit(":", 1)[1] for _, data in buttons] == ["ok", "no"], sent[-1]
    return int(buttons[0][1].split(":")[2])


async def press(harness: BotHarness, broadcast_id: int, action: str = "ok", *,
                chat_id: int = ADMIN, user_id: int = ADMIN) -> None:
    await harness.send(in_chat(callback_update(f"v1:bc:{broadcast_id}:{action}",
                                               user_id=user_id), chat_id))


async def rows(harness: BotHarness, kind: str) -> list[tuple[str, int, str, str | None]]:
    """(dedupe key, chat, status, last error) of the outbox rows of ``kind``."""
    async with harness.components.db.read() as conn:
        found = await conn.execute(
            select(notifications.c.dedupe_key, notifications.c.chat_id,
                   notifications.c.status, notifications.c.last_error)
            .where(notifications.c.kind == kind).order_by(notifications.c.id))
        return [(str(a), int(b), str(c), d) for a, b, c, d in found]


async def actions(harness: BotHarness, prefix: str = "broadcast.") -> list[str]:
    async with harness.components.db.read() as conn:
        found = await conn.execute(select(audit_log.c.action).where(
            audit_log.c.action.startswith(prefix)).order_by(audit_log.c.id))
        return [str(action) for action in found.scalars()]


def texts(harness: BotHarness, chat_id: int) -> list[str]:
    return harness.api.texts(chat_id)


# --- opting in and out --------------------------------------------------------------------


async def test_promotions_are_off_by_default_and_one_tap_in_settings(
        harness: BotHarness) -> None:
    await harness.send(text_update("/start"))
    await harness.send(text_update("/settings"))
    menu = harness.api.sent()[-1]
    assert "Promotions: off" in menu["text"]
    assert keyboard(menu)[-1] == ("📣 Turn promotions on", "v1:st:promo_on")

    await opt_in(harness, 555)

    assert "now and then I will send you an offer" in last_answer(harness)["text"]
    edited = last_edit(harness)
    assert "Promotions: on" in edited["text"]
    assert keyboard(edited)[-1] == ("📣 Turn promotions off", "v1:st:promo_off")
    async with harness.components.db.read() as conn:
        assert (await conn.execute(select(users.c.promotions).where(users.c.id == 555))
                ).scalar_one() is True
    await opt_in(harness, 555)  # the old button again: stays on, says so
    assert await harness.components.promotions.opted_in(555)

    await opt_in(harness, 555, on=False)

    assert "I will not send you offers" in last_answer(harness)["text"]
    assert "Promotions: off" in last_edit(harness)["text"]
    assert not await harness.components.promotions.opted_in(555)
    assert await actions(harness, "user.promotions") == ["user.promotions"] * 3


# --- who gets it --------------------------------------------------------------------------


async def test_a_broadcast_reaches_only_the_opted_in_users_of_that_operator(
        harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    await a_user(harness, 502, CELLCARD_2, promotions=False)
    await a_user(harness, 503, SMART)
    await a_user(harness, 504)  # no line
    await a_user(harness, 505, CELLCARD_3)
    line = (await harness.components.lines.for_user(505))[0]
    await harness.components.lines.unbind(505, line.id)  # bound no more: not a Cellcard user
    await a_user(harness, 506, METFONE)
    await opt_in(harness, 506, on=False)  # opted in, then out

    broadcast_id = await broadcast(harness, f"cellcard {OFFER}")

    preview, question = harness.api.sent()[-2:]
    assert preview["text"] == f"{OFFER}\n\n{OPT_OUT}"  # as the users will read it
    assert (f"📣 Broadcast #{broadcast_id}: the message above goes to 1 user who opted in "
            "and has a Cellcard line") in question["text"]
    assert keyboard(question) == [("✅ Send to 1 user", f"v1:bc:{broadcast_id}:ok"),
                                  ("✖️ Cancel", f"v1:bc:{broadcast_id}:no")]
    assert await rows(harness, "promotion") == []  # a preview sends nothing

    await press(harness, broadcast_id)

    assert "Queuing" in last_answer(harness)["text"]
    assert f"Broadcast #{broadcast_id} is queued: 1 offer." in last_edit(harness)["text"]
    assert keyboard(last_edit(harness)) == []
    assert [(key, chat) for key, chat, _s, _e in await rows(harness, "promotion")] == [
        (f"broadcast:{broadcast_id}:501", 501)]
    await deliver(harness)
    assert offers(harness) == {501: f"{OFFER}\n\n{OPT_OUT}"}

    everyone = await broadcast(harness, "all Free SIM swap at our shops")
    await press(harness, everyone)
    await deliver(harness)

    assert sorted(chat for chat, text in offers(harness).items()
                  if text.startswith("Free SIM swap")) == [501, 503, 504, 505]


async def test_an_offer_waits_for_the_end_of_the_users_quiet_hours(
        harness: BotHarness) -> None:
    c = harness.components
    assert isinstance(c.clock, ManualClock)
    await a_user(harness, 501, CELLCARD_1)
    await a_user(harness, 502, CELLCARD_2)
    await c.users.set_quiet_hours(502, QuietHours(22 * 60, 7 * 60))  # Phnom Penh time
    c.clock.set(datetime(2026, 11, 25, 16, 0, tzinfo=UTC))  # 23:00 there

    broadcast_id = await broadcast(harness, f"cellcard {OFFER}")
    await press(harness, broadcast_id)
    await deliver(harness)

    assert set(offers(harness)) == {501}
    async with c.db.read() as conn:
        held = (await conn.execute(select(notifications.c.next_attempt_at).where(
            notifications.c.dedupe_key == f"broadcast:{broadcast_id}:502"))).scalar_one()
    # 07:00 in Phnom Penh, plus its place in the pacing (the second copy: 0.1 s)
    assert held == datetime(2026, 11, 26, 0, 0, 0, 100_000, tzinfo=UTC)
    assert await c.promotions.advance() == 0  # one copy is still to go: no report yet

    c.clock.set(held)
    await deliver(harness)

    assert set(offers(harness)) == {501, 502}


# --- confirming once ----------------------------------------------------------------------


async def test_a_double_confirm_queues_the_broadcast_once(harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    await a_user(harness, 503, SMART)
    broadcast_id = await broadcast(harness, f"all {OFFER}")

    await press(harness, broadcast_id)
    await press(harness, broadcast_id)

    assert last_answer(harness)["text"] == (f"Broadcast #{broadcast_id} is already queued: "
                                            "it goes out once.")
    assert len(await rows(harness, "promotion")) == 2
    assert await actions(harness) == ["broadcast.draft", "broadcast.confirmed",
                                      "broadcast.queued"]
    await press(harness, broadcast_id, "no")  # too late to cancel
    assert "already queued" in last_answer(harness)["text"]
    await deliver(harness)
    assert sorted(offers(harness)) == [501, 503]
    assert len([t for t in harness.api.texts() if t.startswith(OFFER)]) == 3  # + the preview


async def test_the_same_offer_broadcast_again_reaches_nobody_twice(
        harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    await a_user(harness, 503, SMART)
    first = await broadcast(harness, f"all {OFFER}")
    again = await broadcast(harness, f"cellcard {OFFER}")  # a second preview of it, and ...
    await press(harness, first)
    await deliver(harness)

    await press(harness, again)  # ... its Confirm: refused, naming the first

    assert last_edit(harness)["text"] == (
        f"Broadcast #{again} was not sent.\nThis offer is already broadcast #{first} (to "
        f"every user who opted in): each user gets it once. /broadcast status {first} tells "
        "how it goes; change the text to send a new offer.")
    await harness.send(text_update(f"/broadcast smart {OFFER}", user_id=ADMIN))
    assert texts(harness, ADMIN)[-1].startswith(f"This offer is already broadcast #{first}")
    assert keyboard(harness.api.sent()[-1]) == []
    await deliver(harness)
    assert [key for key, _c, _s, _e in await rows(harness, "promotion")] == [
        f"broadcast:{first}:501", f"broadcast:{first}:503"]
    assert sorted(offers(harness)) == [501, 503]
    assert [len([t for t in texts(harness, user) if t.startswith(OFFER)])
            for user in (501, 503)] == [1, 1]
    assert await actions(harness) == ["broadcast.draft", "broadcast.draft",
                                      "broadcast.confirmed", "broadcast.queued"]


async def test_cancel_sends_nothing_and_confirm_after_it_is_refused(
        harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    broadcast_id = await broadcast(harness, f"all {OFFER}")

    await press(harness, broadcast_id, "no")

    assert last_edit(harness)["text"] == (f"Broadcast #{broadcast_id} is cancelled. Nothing "
                                          "was sent.")
    await press(harness, broadcast_id)
    assert "was cancelled" in last_answer(harness)["text"]
    assert await rows(harness, "promotion") == []
    assert await actions(harness) == ["broadcast.draft", "broadcast.cancelled"]


async def test_a_preview_older_than_an_hour_is_not_sent(harness: BotHarness) -> None:
    c = harness.components
    assert isinstance(c.clock, ManualClock)
    await a_user(harness, 501, CELLCARD_1)
    broadcast_id = await broadcast(harness, f"all {OFFER}")
    c.clock.advance(timedelta(hours=1, minutes=1))

    await press(harness, broadcast_id)

    assert "more than an hour old" in last_edit(harness)["text"]
    assert await rows(harness, "promotion") == []


# --- the report -----------------------------------------------------------------------------


async def test_the_report_counts_delivered_blocked_and_failed_exactly(
        harness: BotHarness) -> None:
    c = harness.components
    assert isinstance(c.clock, ManualClock)
    for user_id in (501, 502, 503, 504, 505):
        await a_user(harness, user_id)
    answering(harness, {503: (403, "Forbidden: bot was blocked by the user"),
                        504: (400, "Bad Request: message can't be sent")})
    broadcast_id = await broadcast(harness, f"all {OFFER}")
    await press(harness, broadcast_id)
    await opt_in(harness, 505, on=False)  # before it reached them: withdrawn

    assert await c.promotions.advance() == 0  # nothing sent yet: no report
    await harness.send(text_update(f"/broadcast status {broadcast_id}", user_id=ADMIN))
    status = texts(harness, ADMIN)[-1]
    assert "State: sending" in status
    assert "Still pending: 4" in status
    assert "Turned offers off before it arrived: 1" in status
    await deliver(harness)

    assert sorted(offers(harness)) == [501, 502]
    assert not (await user_row(harness, 503)).reachable  # blocked: marked unreachable
    by_user = {key.rsplit(":", 1)[1]: (state, error) for key, _chat, state, error
               in await rows(harness, "promotion")}
    assert {user: state for user, (state, _e) in by_user.items()} == {
        "501": "sent", "502": "sent", "503": "dropped", "504": "failed", "505": "dropped"}

    assert await c.promotions.advance() == 1
    assert await c.promotions.advance() == 0  # reported once
    await deliver(harness)

    report = texts(harness, ADMIN)[-1]
    assert report == "\n".join([
        f"📣 Broadcast #{broadcast_id} to every user who opted in is done.",
        "Delivered: 2", "Blocked the bot: 1", "Failed: 1",
        "Turned offers off before it arrived: 1"])
    assert [(key, chat) for key, chat, _s, _e in await rows(harness, "broadcast_report")] == [
        (f"broadcast_report:{broadcast_id}:{ADMIN}", ADMIN)]
    await harness.send(text_update(f"/broadcast status {broadcast_id}", user_id=ADMIN))
    status = texts(harness, ADMIN)[-1]
    assert "State: done, reported" in status
    for line in ("Queued: 5", "Delivered: 2", "Blocked the bot: 1", "Failed: 1",
                 "Still pending: 0"):
        assert line in status
    assert await actions(harness) == ["broadcast.draft", "broadcast.confirmed",
                                      "broadcast.queued", "broadcast.finished"]


async def test_an_admin_group_previews_confirms_and_gets_the_report(
        harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    broadcast_id = await broadcast(harness, f"cellcard {OFFER}", chat_id=ADMIN_GROUP)
    # A preview is confirmed only where it was shown.
    await press(harness, broadcast_id, chat_id=ADMIN)
    assert "no longer active" in last_answer(harness)["text"]

    await press(harness, broadcast_id, chat_id=ADMIN_GROUP)  # the gate lets it through
    await deliver(harness)
    assert await harness.components.promotions.advance() == 1
    await deliver(harness)

    assert sorted(offers(harness)) == [501]
    assert texts(harness, ADMIN_GROUP)[-1].startswith(
        f"📣 Broadcast #{broadcast_id} to users who opted in and have a Cellcard line is done.")


# --- who may, and what is refused --------------------------------------------------------


async def test_nobody_but_the_admin_chats_can_broadcast(harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    await harness.send(text_update(f"/broadcast all {OFFER}", user_id=501))
    assert texts(harness, 501)[-1] == "I don't know that command. /help lists what I can do."
    await harness.send(in_chat(text_update(f"/broadcast all {OFFER}", user_id=ADMIN),
                               OTHER_GROUP))
    assert all("Broadcast" not in text for text in texts(harness, OTHER_GROUP))
    assert await actions(harness) == []

    broadcast_id = await broadcast(harness, f"all {OFFER}")
    await press(harness, broadcast_id, chat_id=501, user_id=501)  # a forged button
    assert "no longer active" in last_answer(harness)["text"]
    await press(harness, broadcast_id, chat_id=OTHER_GROUP)
    assert await rows(harness, "promotion") == []
    assert await actions(harness) == ["broadcast.draft"]


@pytest.mark.parametrize(("words", "answer"), [
    ("", "Usage: /broadcast all|smart|cellcard|metfone|seatel TEXT"),
    ("cellcard", "Write the offer after the audience. Nothing was sent."),
    ("cellcard    \n  ", "Write the offer after the audience. Nothing was sent."),
    ("vodafone Cheap calls!", "“vodafone” is not an audience: write all, smart, cellcard, "
                              "metfone or seatel."),
    ("all " + "x" * 5000, "That offer is 5000 characters long; one offer holds at most 4000"),
    ("all " + "📣" * 2001, "That offer is 4002 characters long"),  # as Telegram counts
    ("status", "Usage: /broadcast"),
    ("status 12x", "Usage: /broadcast"),
    ("status 99", "There is no broadcast #99."),
    ("seatel Hello", "Nobody would get it: there are no users who opted in and have a "
                     "Seatel line. Nothing was sent."),
])
async def test_bad_input_is_refused_with_a_clear_answer(harness: BotHarness, words: str,
                                                        answer: str) -> None:
    await a_user(harness, 501, CELLCARD_1)
    await harness.send(text_update(f"/broadcast {words}".rstrip(" "), user_id=ADMIN))

    reply = harness.api.sent()[-1]
    assert answer in reply["text"]
    assert keyboard(reply) == []
    assert await actions(harness) == []


async def test_the_longest_offer_fits_one_telegram_message(harness: BotHarness) -> None:
    await a_user(harness, 501, CELLCARD_1)
    text = "\n".join(["Line of the offer."] * 210)[:4000]
    broadcast_id = await broadcast(harness, f"all {text}")
    await press(harness, broadcast_id)
    await deliver(harness)

    sent = offers(harness)[501]
    assert sent == f"{text.strip()}\n\n{OPT_OUT}"  # newlines kept as typed
    assert len(sent) <= 4096
